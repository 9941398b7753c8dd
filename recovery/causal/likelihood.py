"""The likelihood of the training summaries, hidden steps integrated out.

Two implementations of one quantity: :func:`loglik_tensor` (PyTensor, what
the sampler sees) and :func:`loglik_terms` (NumPy, per batch, what the robust
widening differentiates). Both build the noise covariance of the gauged
means the same way: :func:`noise_covariance` (NumPy, also used by
``queries.root_cause``) and :func:`noise_covariance_tensor`, tested equal.

Each comes in two forms of the same density. ``dense``: a batch's gauged
means are one multivariate normal (a Cholesky factor of their covariance per
evaluation, plus a Woodbury update per fault segment). ``dag``: when every
hidden state the model needs is read exactly (:func:`dag_index` says when),
the density factorises along the causal graph into one normal per reading,
given the readings of its parents, and costs a matrix product instead of
factors of a ``D x D`` covariance. ``form="auto"`` (the default) takes the
``dag`` form whenever it is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recovery.causal import _filter
from recovery.causal.components import BarSpread
from recovery.causal.graph import CausalGraph
from recovery.causal.layout import Layout, Standardisation
from recovery.causal.summaries import Summaries

__all__ = ["FitData", "fit_data", "DagIndex", "dag_index", "likelihood_form", "noise_covariance", "noise_covariance_tensor", "loglik_tensor",
           "data_names", "data_values", "gaussian_parts", "loglik_terms"]


@dataclass(frozen=True)
class FitData:
    """Standardised training summaries grouped by inspection pattern."""

    rows: np.ndarray             # (D, 2) (q, c) of each gauged pair, in order
    n_sample: np.ndarray         # (D,) bars gauged per batch (nominal)
    gauge: np.ndarray            # (D,) gauge sd, standardised
    patterns: list               # [(obs index (Dp,), Z (Bp, Dp), zeta (Bp, F+1))]
    R: np.ndarray                # (D,) variance of a sample mean, standardised
    excluded: int                # batches in inspection patterns too rare to fit


def fit_data(summ: Summaries, graph: CausalGraph, std: Standardisation, layout: Layout,
              spread: BarSpread, *, min_pattern: int = 3) -> FitData:
    p = graph.process
    mod = np.array([p.char_index[c] for c in graph.modeled])
    rows = np.array([(q, c) for q in range(layout.Q) for c in np.flatnonzero(layout.gauged[q])])
    q_, c_ = rows[:, 0], rows[:, 1]
    Z = (summ.mean[:, q_, mod[c_]] - std.centre[q_, c_]) / std.scale[c_]
    n_sample = np.array([p.inspections[q].sample for q in q_], dtype=float)
    gauge = np.array([p.characteristics[mod[c]].gauge_sigma for c in c_]) / std.scale[c_]
    t = (summ.day - std.day_ref) / 100.0
    zeta = np.concatenate([std.features(summ.levers), t[:, None]], axis=1)
    obs = np.isfinite(Z)
    keys, inv, counts = np.unique(obs, axis=0, return_inverse=True, return_counts=True)
    patterns, excluded = [], 0
    for k, key in enumerate(keys):
        sel = np.flatnonzero(inv.reshape(-1) == k)
        if not key.any():
            continue
        if counts[k] < min_pattern:
            excluded += len(sel)
            continue
        idx = np.flatnonzero(key)
        patterns.append((idx, Z[np.ix_(sel, idx)], zeta[sel]))
    sbar = spread.mean_sd()[q_, c_] / std.scale[c_]
    R = sbar**2 * (1.0 / n_sample - 1.0 / p.bars_per_batch) + gauge**2 / n_sample
    return FitData(rows, n_sample, gauge, patterns, R, excluded)


def noise_covariance(A: np.ndarray, tau: np.ndarray, R: np.ndarray, rows_q: np.ndarray,
                     rows_c: np.ndarray, mix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of gauged batch means from the process noise and the reading noise (NumPy).

    With ``delta_q = A_q delta_{q-1} + w_q``, ``w_q ~ N(0, diag(tau_q^2))``, the
    reading of characteristic ``c`` at inspection ``q`` loads on the noise of
    every segment ``r <= q`` through ``A_q ... A_{r+1}``; its own reading noise
    is ``R``. The one NumPy form of this covariance: the robust widening's
    likelihood (:func:`gaussian_parts`) and ``queries.root_cause`` use it, and a
    test holds it equal to :func:`noise_covariance_tensor`, the sampler's.

    Parameters
    ----------
    A : ndarray (S, Q, d, d)
        Carry-over per draw and segment (standardised units).
    tau : ndarray (S, Q, d)
        Process-noise sd per draw and segment (standardised units).
    R : ndarray (D,) or (S, D)
        Variance of each reading (standardised units squared).
    rows_q, rows_c : ndarray of int (D,)
        Inspection and characteristic of each reading, ``rows_q`` ascending.
    mix : ndarray (S, Q, d, d), optional
        How each segment's noise reaches its end state through the within-step
        edges (``Params.mix``); the identity when None.

    Returns
    -------
    Sigma : ndarray (S, D, D)
    loadings : ndarray (S, Q, D, d)
        ``loadings[s, r]``: response of the readings to the noise of segment
        ``r`` (a fault shift in segment ``r`` adds ``loadings[s, r] @ shift``).
    """
    S, Q, d, _ = A.shape
    D = len(rows_q)
    last = int(rows_q.max()) if D else -1
    Gl = np.zeros((S, Q, D, d))
    for r in range(min(Q, last + 1)):
        lam = np.broadcast_to(np.eye(d), (S, d, d)).copy() if mix is None else mix[:, r].copy()
        for q in range(r, last + 1):
            if q > r:
                lam = A[:, q] @ lam
            rows = np.flatnonzero(rows_q == q)
            Gl[:, r, rows] = lam[:, rows_c[rows]]
    Sigma = np.einsum("srik,srk,srjk->sij", Gl, tau**2, Gl)
    Sigma[:, np.arange(D), np.arange(D)] += R
    return Sigma, Gl


def noise_covariance_tensor(A, tau, R: np.ndarray, rows_q: np.ndarray, rows_c: np.ndarray, Q: int, d: int,
                            mix=None):
    """:func:`noise_covariance` for one draw, symbolic (PyTensor): ``A (Q, d, d)``,
    ``tau (Q, d)``, ``mix (Q, d, d)`` or None; returns ``Sigma (D, D)`` and the
    list of ``Q`` loadings ``(D, d)``."""
    import pytensor.tensor as pt

    Lam = [[None] * Q for _ in range(Q)]
    for r in range(Q):
        Lam[r][r] = pt.eye(d) if mix is None else mix[r]
        for q in range(r + 1, Q):
            Lam[q][r] = pt.dot(A[q], Lam[q - 1][r])
    blocks_q = [np.flatnonzero(rows_q == q) for q in range(Q)]

    def loading(r):
        parts = []
        for q in range(Q):
            if not len(blocks_q[q]):
                continue
            parts.append(Lam[q][r][rows_c[blocks_q[q]]] if q >= r else pt.zeros((len(blocks_q[q]), d)))
        return pt.concatenate(parts, axis=0)

    Gl = [loading(r) for r in range(Q)]
    Sigma = pt.diag(R)
    for r in range(Q):
        Sigma = Sigma + pt.dot(Gl[r] * tau[r] ** 2, Gl[r].T)
    return Sigma, Gl


def data_names(fd: FitData) -> list[str]:
    """Names of the data inputs of :func:`loglik_tensor` for ``fd``, in the order
    of :func:`data_values`: ``R``, then ``Z<k>`` and ``zeta<k>`` of each pattern."""
    return ["R"] + [f"{w}{k}" for k in range(len(fd.patterns)) for w in ("Z", "zeta")]


def data_values(fd: FitData) -> dict[str, np.ndarray]:
    """The data of ``fd`` by :func:`data_names` (standardised units, float64)."""
    vals = [fd.R] + [a for _, Zp, zeta in fd.patterns for a in (Zp, zeta)]
    return {n: np.ascontiguousarray(v, dtype=np.float64) for n, v in zip(data_names(fd), vals)}


def loglik_tensor(P: dict, fd: FitData, layout: Layout, bars: int, *, per_batch: bool = False,
                  data: dict | None = None, form: str = "auto"):
    """Log-likelihood of the training summaries (PyTensor), hidden steps integrated out.

    The total, or with ``per_batch`` each batch's term (batches in the order of
    ``fd.patterns``). ``form``: ``"auto"`` factorises along the graph when that
    is exact (:func:`dag_index`), ``"dense"`` always takes the multivariate
    normal of a batch's readings, ``"dag"`` insists on the factorised form.

    ``data`` maps :func:`data_names` to symbolic inputs (shared variables) that
    stand for the readings, features and reading variances; without it they
    enter the graph as constants. With symbolic data the graph depends on the
    structure of ``fd`` only (its rows and the observed set of each pattern),
    so a compiled graph serves every data set of that structure.
    """
    import pytensor.tensor as pt
    from pytensor.tensor.slinalg import cholesky, solve_triangular

    ix = _chosen(fd, layout, form)
    if ix is not None:
        return _loglik_dag_tensor(P, ix, fd, layout, per_batch, data)
    Q, d = layout.Q, layout.d
    A, B, G, tau, m = P["A"], P["B"], P["G"], P["tau"], P["m"]
    pi, tauf = P["pi"], P["tauf"]
    q_, c_ = fd.rows[:, 0], fd.rows[:, 1]
    # K_q: response of delta_q to the per-batch features [phi, t]
    K, prev = [], None
    for q in range(Q):
        inj = pt.concatenate([B[q], G[q][:, None]], axis=1)
        prev = inj if prev is None else pt.dot(A[q], prev) + inj
        K.append(prev)
    blocks_q = [np.flatnonzero(q_ == q) for q in range(Q)]
    Kobs = pt.concatenate([K[q][c_[blocks_q[q]]] for q in range(Q) if len(blocks_q[q])], axis=0)
    mvec = m[q_, c_]
    R = fd.R if data is None else data["R"]
    Sigma, Gl = noise_covariance_tensor(A, tau, R, q_, c_, Q, d, P.get("mix"))
    # The fault-shift mixture (``_filter.component_log_weights``): none, one
    # shift in segment q, or two or more (a shift in every fault segment).
    fault_q = [int(q) for q in layout.rate_q]
    log1m = pt.log1p(-pi)
    lw0 = pt.sum(log1m[fault_q]) if fault_q else pt.as_tensor_variable(0.0)
    lw = [lw0] + [lw0 - log1m[q] + pt.log(pi[q]) for q in fault_q]
    several = len(fault_q) >= 2
    if several:
        lw.append(pt.log(pt.maximum(1.0 - pt.exp(pt.logsumexp(pt.stack(lw))), 1e-300)))
    total, terms = 0.0, []
    for k, (idx, Zp, zeta) in enumerate(fd.patterns):
        if data is not None:
            Zp, zeta = data[f"Z{k}"], data[f"zeta{k}"]
        Sp = Sigma[idx][:, idx]
        L = cholesky(Sp)
        resid = pt.as_tensor_variable(Zp) - (mvec[idx] + pt.dot(zeta, Kobs[idx].T))
        Rt = solve_triangular(L, resid.T, lower=True)
        quad0 = pt.sum(Rt**2, axis=0)
        logdet0 = 2.0 * pt.sum(pt.log(pt.diag(L)))
        comps = [lw[0] - 0.5 * (quad0 + logdet0)]
        for k, q in enumerate(fault_q):
            W = solve_triangular(L, (Gl[q] * tauf[q])[idx], lower=True)
            C = pt.eye(d) + pt.dot(W.T, W)
            Lc = cholesky(C)
            V = solve_triangular(Lc, pt.dot(W.T, Rt), lower=True)
            quad = quad0 - pt.sum(V**2, axis=0)
            comps.append(lw[k + 1] - 0.5 * (quad + logdet0 + 2.0 * pt.sum(pt.log(pt.diag(Lc)))))
        if several:
            U = pt.concatenate([(Gl[q] * tauf[q])[idx] for q in fault_q], axis=1)
            Ls = cholesky(Sp + pt.dot(U, U.T))
            Rs = solve_triangular(Ls, resid.T, lower=True)
            comps.append(lw[-1] - 0.5 * (pt.sum(Rs**2, axis=0) + 2.0 * pt.sum(pt.log(pt.diag(Ls)))))
        ll = pt.logsumexp(pt.stack(comps), axis=0) - 0.5 * len(idx) * math.log(2 * math.pi)
        terms.append(ll)
        total = total + pt.sum(ll)
    return pt.concatenate(terms) if per_batch else total


def gaussian_parts(theta: np.ndarray, fd: FitData, layout: Layout):
    """The fault-free Gaussian of the gauged means at one ``theta (P,)`` (NumPy).

    Returns ``(mean, K, Sigma, Gl)``: a batch's gauged means (rows ``fd.rows``)
    are ``N(mean + K @ zeta, Sigma)`` for its features ``zeta = [phi, t]``;
    ``Gl[r]`` is their loading on the noise of segment ``r`` (a fault shift in
    segment ``r`` adds ``Gl[r] @ (tauf[r] * z)``).
    """
    P = layout.decode(theta[None])
    A, B, G, tau, m = P.A[0], P.B[0], P.G[0], P.tau[0], P.m[0]
    Q, d = layout.Q, layout.d
    q_, c_ = fd.rows[:, 0], fd.rows[:, 1]
    K, prev = [], None
    for q in range(Q):
        inj = np.concatenate([B[q], G[q][:, None]], axis=1)
        prev = inj if prev is None else A[q] @ prev + inj
        K.append(prev)
    Kobs = np.stack([K[q][c] for q, c in zip(q_, c_)])
    Sigma, Gl = noise_covariance(A[None], tau[None], fd.R, q_, c_, P.mix)
    return m[q_, c_], Kobs, Sigma[0], Gl[0]


def loglik_terms(theta: np.ndarray, fd: FitData, layout: Layout, *, form: str = "auto") -> np.ndarray:
    """Each training batch's log-likelihood term at one ``theta (P,)`` (NumPy).

    The same quantity as ``loglik_tensor(..., per_batch=True)`` (batches in the
    order of ``fd.patterns``), without a compile step: the robust adjustment
    evaluates it a few hundred times. ``form`` as for :func:`loglik_tensor`.
    """
    ix = _chosen(fd, layout, form)
    if ix is not None:
        return _loglik_dag_numpy(np.asarray(theta, dtype=np.float64), ix, fd, layout)
    mvec, Kobs, Sigma, Gl = gaussian_parts(theta, fd, layout)
    P = layout.decode(theta[None])
    pi, tauf, d = P.pi[0], P.tauf[0], layout.d
    fault_q = [int(q) for q in layout.rate_q]
    lw, codes = _filter.component_log_weights(pi, fault_q)
    several = codes[-1] == _filter.SEVERAL
    out = []
    for idx, Zp, zeta in fd.patterns:
        Sp = Sigma[np.ix_(idx, idx)]
        L = np.linalg.cholesky(Sp)
        resid = Zp - (mvec[idx] + zeta @ Kobs[idx].T)
        Rt = np.linalg.solve(L, resid.T)
        quad0 = (Rt**2).sum(axis=0)
        logdet0 = 2.0 * np.log(np.diag(L)).sum()
        comps = [lw[0] - 0.5 * (quad0 + logdet0)]
        for k, q in enumerate(fault_q):
            W = np.linalg.solve(L, (Gl[q] * tauf[q])[idx])
            Lc = np.linalg.cholesky(np.eye(d) + W.T @ W)
            V = np.linalg.solve(Lc, W.T @ Rt)
            comps.append(lw[k + 1] - 0.5 * (quad0 - (V**2).sum(axis=0) + logdet0
                                             + 2.0 * np.log(np.diag(Lc)).sum()))
        if several:
            U = np.concatenate([(Gl[q] * tauf[q])[idx] for q in fault_q], axis=1)
            Ls = np.linalg.cholesky(Sp + U @ U.T)
            Rs = np.linalg.solve(Ls, resid.T)
            comps.append(lw[-1] - 0.5 * ((Rs**2).sum(axis=0) + 2.0 * np.log(np.diag(Ls)).sum()))
        out.append(np.logaddexp.reduce(np.stack(comps), axis=0) - 0.5 * len(idx) * math.log(2 * math.pi))
    return np.concatenate(out)



# ---- the factorised form ------------------------------------------------------
@dataclass(frozen=True)
class DagIndex:
    """Where each term of the factorised likelihood comes from (:func:`dag_index`).

    Reading ``i`` (row ``fd.rows[i]``) has the structural residual ::

        e_i = y_i - sum_j C[i, j] y_j - zeta @ K[i],    y = Z - m

    where ``C`` holds the carry-over and within-step coefficients that feed it
    (before the within-step edges are solved, ``W`` not ``(I - W)^-1``) and
    ``K`` its lever effects and drift; ``e_i ~ N(0, tau_i^2)``, plus
    ``tau_fault_i^2`` in a fault component that shifts its segment.

    Attributes
    ----------
    tgt, src : ndarray of int (U,)
        The nonzero entries of ``C`` (reading, parent reading), each pair once.
    coef_map : ndarray (U, E)
        0/1: which ``theta`` entries (``coef_i``) add up to each pair's
        coefficient (a parent read both before and after the step can feed one
        reading twice: once carried over, once within the step).
    coef_i : ndarray of int (E,)
    lever_row, lever_f, lever_i : ndarray of int
        ``K[lever_row, lever_f] = theta[lever_i]``.
    drift_rows : ndarray (n_drift, D)
        ``K[:, F] = theta[layout.drift_i] @ drift_rows`` (drift per 100 days).
    mean_i, noise_i : ndarray of int (D,)
        ``theta`` index of each reading's mean and log noise sd.
    fscale_i : ndarray of int (D,)
        ``theta`` index of each reading's log fault-shift sd, -1 where its
        segment has no fault component.
    seg_onehot : ndarray (D, n_fault)
        1 where the reading belongs to the ``k``-th fault segment (``layout.rate_q``).
    """

    tgt: np.ndarray
    src: np.ndarray
    coef_map: np.ndarray
    coef_i: np.ndarray
    lever_row: np.ndarray
    lever_f: np.ndarray
    lever_i: np.ndarray
    drift_rows: np.ndarray
    mean_i: np.ndarray
    noise_i: np.ndarray
    fscale_i: np.ndarray
    seg_onehot: np.ndarray


def dag_index(fd: FitData, layout: Layout) -> DagIndex | None:
    """The factorised form of the likelihood when it is exact, else None.

    The hidden states are integrated out (the dense form) because they are
    read with noise. When they are read exactly, integrating is a change of
    variables: each reading is its parents' readings times their coefficients
    plus its own noise, the map from readings to noises is unit triangular
    (parents come earlier, within a step along the DAG), so the density is the
    product of one normal per reading. Exact when all of these hold:

    * every reading has variance 0 (``fd.R == 0``: one bar per batch, or every
      bar gauged, and no gauge noise);
    * every batch reads every gauged pair (one inspection pattern, complete);
    * the gauged pairs are exactly the pairs with their own noise (each
      characteristic a segment changes is read at the segment's end, and none
      is read twice without a change in between);
    * every parent value a reading depends on is a reading (or 0, never set).

    A partner line with one bar per batch and no gauge sigma meets them. With
    several bars and a gauge sigma a sample mean carries reading noise, the
    states are hidden, and the dense form is used: the per-node terms would
    then have to include the parents' reading noise (errors in variables), which
    does not factorise.
    """
    if len(fd.R) == 0 or np.any(np.asarray(fd.R) != 0.0):
        return None
    D = len(fd.rows)
    if len(fd.patterns) != 1 or len(fd.patterns[0][0]) != D:
        return None
    row_of = {(int(q), int(c)): i for i, (q, c) in enumerate(fd.rows)}
    noise_of = {(int(q), int(c)): int(k) for q, c, k in zip(layout.noise_q, layout.noise_c, layout.noise_i)}
    if set(noise_of) != set(row_of):
        return None
    zero, unknown = -1, -2
    prev = np.full(layout.d, zero)   # each characteristic's value at the last segment's end
    pairs: dict[tuple[int, int], list[int]] = {}

    def feed(i: int, state: int, k: int) -> bool:
        if state == unknown:
            return False
        if state != zero:
            pairs.setdefault((i, int(state)), []).append(int(k))
        return True

    for q, seg in enumerate(layout.segments):
        cur = prev.copy()
        for c in np.flatnonzero(seg.acted):
            cur[c] = row_of.get((q, int(c)), unknown)
        for k in np.flatnonzero(layout.carry_q == q):
            i = row_of.get((q, int(layout.carry_c[k])))
            if i is None or not feed(i, prev[layout.carry_c2[k]], layout.carry_i[k]):
                return None
        for k in np.flatnonzero(np.asarray(layout.within_q, dtype=np.int64) == q):
            c = int(layout.within_c[k])
            i = row_of.get((q, c))
            if i is None:
                if layout.relevant[q, c]:
                    return None
                continue       # no reading depends on it (Layout.relevant)
            if not feed(i, cur[layout.within_c2[k]], layout.within_i[k]):
                return None
        prev = cur
    keys = sorted(pairs)
    coef_i = np.array([k for key in keys for k in pairs[key]], dtype=np.int64)
    coef_map = np.zeros((len(keys), len(coef_i)))
    col = 0
    for u, key in enumerate(keys):
        for _ in pairs[key]:
            coef_map[u, col] = 1.0
            col += 1
    lever_row = np.array([row_of[(int(q), int(c))] for q, c in zip(layout.lever_q, layout.lever_c)], dtype=np.int64)
    rows_q, rows_c = fd.rows[:, 0], fd.rows[:, 1]
    drift_rows = np.asarray(layout.drift_map)[:, rows_q * layout.d + rows_c]
    mean_of = {(int(q), int(c)): int(k) for q, c, k in zip(layout.mean_q, layout.mean_c, layout.mean_i)}
    fscale_of = {(int(q), int(c)): int(k) for q, c, k in zip(layout.fscale_q, layout.fscale_c, layout.fscale_i)}
    rows = [(int(q), int(c)) for q, c in fd.rows]
    fault_q = [int(q) for q in layout.rate_q]
    seg_onehot = np.array([[1.0 if q == fq else 0.0 for fq in fault_q] for q, _ in rows]).reshape(D, len(fault_q))
    return DagIndex(np.array([k[0] for k in keys], dtype=np.int64), np.array([k[1] for k in keys], dtype=np.int64),
                    coef_map, coef_i, lever_row, np.asarray(layout.lever_f, dtype=np.int64),
                    np.asarray(layout.lever_i, dtype=np.int64), drift_rows,
                    np.array([mean_of[r] for r in rows], dtype=np.int64),
                    np.array([noise_of[r] for r in rows], dtype=np.int64),
                    np.array([fscale_of.get(r, -1) for r in rows], dtype=np.int64), seg_onehot)


def likelihood_form(fd: FitData, layout: Layout, form: str = "auto") -> str:
    """The form :func:`loglik_tensor` takes for ``form``: ``"dag"`` or ``"dense"``."""
    return "dense" if _chosen(fd, layout, form) is None else "dag"


def _chosen(fd: FitData, layout: Layout, form: str) -> DagIndex | None:
    if form not in ("auto", "dense", "dag"):
        raise ValueError(f"likelihood form must be 'auto', 'dense' or 'dag', got {form!r}")
    if form == "dense":
        return None
    ix = dag_index(fd, layout)
    if ix is None and form == "dag":
        raise ValueError("the likelihood does not factorise along the graph for these data (see dag_index)")
    return ix


def _mixture_weights(pi, fault_q: list[int], lib):
    """Log weights of the fault-shift components, as in :func:`loglik_tensor`."""
    log1m = lib.log1p(-pi)
    lw0 = sum(log1m[q] for q in fault_q) if fault_q else 0.0
    lw = [lw0] + [lw0 - log1m[q] + lib.log(pi[q]) for q in fault_q]
    return lw


def _loglik_dag_tensor(P: dict, ix: DagIndex, fd: FitData, layout: Layout, per_batch: bool, data: dict | None):
    import pytensor.tensor as pt

    theta = P["theta"]
    D, F = len(fd.rows), layout.F
    _, Zp, zeta = fd.patterns[0]
    if data is not None:
        Zp, zeta = data["Z0"], data["zeta0"]
    C = pt.zeros((D, D))
    if len(ix.tgt):
        C = pt.set_subtensor(C[ix.tgt, ix.src], pt.dot(ix.coef_map, theta[ix.coef_i]))
    K = pt.zeros((D, F + 1))
    if len(ix.lever_i):
        K = pt.set_subtensor(K[ix.lever_row, ix.lever_f], theta[ix.lever_i])
    if len(layout.drift_pairs):
        K = pt.set_subtensor(K[:, F], pt.dot(theta[layout.drift_i], ix.drift_rows))
    Y = pt.as_tensor_variable(Zp) - theta[ix.mean_i]
    E = Y - pt.dot(Y, C.T) - pt.dot(zeta, K.T)
    v0 = pt.exp(2.0 * theta[ix.noise_i])
    a0 = -0.5 * (E**2 / v0 + pt.log(2 * math.pi * v0))
    s0 = pt.sum(a0, axis=1)
    fault_q = [int(q) for q in layout.rate_q]
    if not fault_q:
        ll = s0
    else:
        lw = _mixture_weights(P["pi"], fault_q, pt)
        has = ix.fscale_i >= 0
        vf = pt.zeros(D)
        vf = pt.set_subtensor(vf[np.flatnonzero(has)], pt.exp(2.0 * theta[ix.fscale_i[has]]))
        v1 = v0 + vf
        a1 = -0.5 * (E**2 / v1 + pt.log(2 * math.pi * v1))
        Dq = pt.dot(a1 - a0, ix.seg_onehot)          # (B, n_fault): one segment shifted
        comps = [lw[0] + s0] + [lw[k + 1] + s0 + Dq[:, k] for k in range(len(fault_q))]
        if len(fault_q) >= 2:
            last = pt.log(pt.maximum(1.0 - pt.exp(pt.logsumexp(pt.stack(lw))), 1e-300))
            comps.append(last + s0 + pt.sum(Dq, axis=1))
        ll = pt.logsumexp(pt.stack(comps), axis=0)
    return ll if per_batch else pt.sum(ll)


def _loglik_dag_numpy(theta: np.ndarray, ix: DagIndex, fd: FitData, layout: Layout) -> np.ndarray:
    D, F = len(fd.rows), layout.F
    _, Zp, zeta = fd.patterns[0]
    C = np.zeros((D, D))
    C[ix.tgt, ix.src] = ix.coef_map @ theta[ix.coef_i]
    K = np.zeros((D, F + 1))
    K[ix.lever_row, ix.lever_f] = theta[ix.lever_i]
    if len(layout.drift_pairs):
        K[:, F] = theta[layout.drift_i] @ ix.drift_rows
    Y = Zp - theta[ix.mean_i]
    E = Y - Y @ C.T - zeta @ K.T
    v0 = np.exp(2.0 * theta[ix.noise_i])
    a0 = -0.5 * (E**2 / v0 + np.log(2 * math.pi * v0))
    s0 = a0.sum(axis=1)
    fault_q = [int(q) for q in layout.rate_q]
    if not fault_q:
        return s0
    pi = layout.decode(theta[None]).pi[0]
    lw, codes = _filter.component_log_weights(pi, fault_q)
    vf = np.where(ix.fscale_i >= 0, np.exp(2.0 * theta[np.maximum(ix.fscale_i, 0)]), 0.0)
    v1 = v0 + vf
    a1 = -0.5 * (E**2 / v1 + np.log(2 * math.pi * v1))
    Dq = (a1 - a0) @ ix.seg_onehot
    comps = [lw[0] + s0] + [lw[k + 1] + s0 + Dq[:, k] for k in range(len(fault_q))]
    if codes[-1] == _filter.SEVERAL:
        comps.append(lw[-1] + s0 + Dq.sum(axis=1))
    return np.logaddexp.reduce(np.stack(comps), axis=0)
