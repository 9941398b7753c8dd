"""The likelihood of the training summaries, hidden steps integrated out.

Two implementations of one quantity: :func:`loglik_tensor` (PyTensor, what
the sampler sees) and :func:`loglik_terms` (NumPy, per batch, what the robust
widening differentiates). Both build the noise covariance of the gauged
means the same way: :func:`noise_covariance` (NumPy, also used by
``queries.root_cause``) and :func:`noise_covariance_tensor`, tested equal.
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

__all__ = ["FitData", "fit_data", "noise_covariance", "noise_covariance_tensor", "loglik_tensor",
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
                  data: dict | None = None):
    """Log-likelihood of the training summaries (PyTensor), hidden steps integrated out.

    The total, or with ``per_batch`` each batch's term (batches in the order of
    ``fd.patterns``).

    ``data`` maps :func:`data_names` to symbolic inputs (shared variables) that
    stand for the readings, features and reading variances; without it they
    enter the graph as constants. With symbolic data the graph depends on the
    structure of ``fd`` only (its rows and the observed set of each pattern),
    so a compiled graph serves every data set of that structure.
    """
    import pytensor.tensor as pt
    from pytensor.tensor.slinalg import cholesky, solve_triangular

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


def loglik_terms(theta: np.ndarray, fd: FitData, layout: Layout) -> np.ndarray:
    """Each training batch's log-likelihood term at one ``theta (P,)`` (NumPy).

    The same quantity as ``loglik_tensor(..., per_batch=True)`` (batches in the
    order of ``fd.patterns``), without a compile step: the robust adjustment
    evaluates it a few hundred times.
    """
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

