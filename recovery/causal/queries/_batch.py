"""One batch's history in the model's terms (:class:`BatchView`) and the machinery
every query shares: the per-draw Kalman filter, effective lever plans, the
highest-density interval and the out-of-range checks.

The queries take a fitted model as their first argument and read only its
public learned attributes (``graph_``, ``std_``, ``params_``, ``layout_``,
``ranges_``, ``cloud_``, ``crack_``, ``held_levers``); this module never
imports the model class at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recovery.causal import _filter
from recovery.causal.errors import DataError
from recovery.causal.layout import Params
from recovery.causal.summaries import summarise

if TYPE_CHECKING:  # the model imports the queries, never the other way round at run time
    from recovery.causal.model import CausalModel

__all__ = ["HDI_PROB", "BatchView", "batches_in", "view", "hdi"]

HDI_PROB = 0.94


# ---------------------------------------------------------------------------
# One batch's history
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchView:
    """One batch's history in the model's terms.

    Attributes
    ----------
    batch_id : str
    step : int
        Last step with any row in the history.
    q_last : int
        Index of the last inspection with readings (-1: none).
    z : ndarray (Q, d)
        Standardised sample means of the modelled characteristics (NaN: none).
    mean, count : ndarray (Q, n_chars)
        Physical sample means and bars gauged.
    levers : ndarray (n_levers,)
        Levers as used up to ``step`` (nominal where the history has none).
    day : float
    flags : ndarray (Q,) bool
        Gates the batch failed at each inspection.
    """

    batch_id: str
    step: int
    q_last: int
    z: np.ndarray
    mean: np.ndarray
    count: np.ndarray
    levers: np.ndarray
    day: float
    flags: np.ndarray

    @property
    def first_flag(self) -> int | None:
        hit = np.flatnonzero(self.flags[: self.q_last + 1])
        return int(hit[0]) if len(hit) else None


def batches_in(history: pd.DataFrame) -> list[str]:
    """Batch ids in a history table, in order of appearance."""
    return list(pd.unique(history["batch_id"].astype(str)))


def view(model: CausalModel, history: pd.DataFrame, batch: str | None = None) -> BatchView:
    """Reduce one batch's step data to a :class:`BatchView`.

    Parameters
    ----------
    model : CausalModel
    history : DataFrame
        Step data (schema) of one batch, or of many with ``batch`` naming one.
    batch : str, optional

    Raises
    ------
    DataError
        The data do not match the model's process, the batch is not in the
        table (or several are and none was named), or it has no measurement.
    """
    model.check_fitted()
    p = model.graph_.process
    ids = batches_in(history)
    if batch is None:
        if len(ids) != 1:
            raise DataError(f"the history holds {len(ids)} batches; name one (batch=...)")
        batch = ids[0]
    elif batch not in ids:
        raise DataError(f"batch '{batch}' is not in the history")
    rows = history[history["batch_id"].astype(str) == batch]
    if not (rows["kind"].astype(str) == "measurement").any():
        raise DataError(f"batch '{batch}' has no measurement yet; nothing to estimate from")
    s = summarise(rows, p)
    std, g = model.std_, model.graph_
    mod = [p.char_index[c] for c in g.modeled]
    z = (s.mean[0][:, mod] - std.centre) / std.scale
    seen = np.isfinite(s.mean[0]).any(axis=1)
    q_last = int(np.flatnonzero(seen)[-1]) if seen.any() else -1
    flags = np.zeros(len(p.inspections), dtype=bool)
    for q, ins in enumerate(p.inspections):
        flags[q] = bool(p.gate_flags(ins.step, s.mean[0, q]))
    levers = s.levers[0].copy()
    later = p.free_levers(int(s.last_step[0]))
    levers[later] = p.nominal_plan()[later]
    return BatchView(batch, int(s.last_step[0]), q_last, z, s.mean[0], s.count[0], levers,
                     float(s.day[0]), flags)


# ---------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------

def _draws(model: CausalModel, n_draws: int | None) -> Params:
    P = model.params_
    if n_draws is None or n_draws >= P.n_draws:
        return P
    idx = np.linspace(0, P.n_draws - 1, n_draws).round().astype(int)
    return P.take(idx)


def _injection(model: CausalModel, P: Params, levers: np.ndarray, day: float) -> np.ndarray:
    """Mean injected in each segment for these lever values: (S, Q, d)."""
    phi = model.std_.features(levers)
    t = (day - model.std_.day_ref) / 100.0
    return np.einsum("sqdf,f->sqd", P.B, phi) + P.G * t


def _obs_var(model: CausalModel, P: Params, bv: BatchView) -> np.ndarray:
    p = model.graph_.process
    mod = [p.char_index[c] for c in model.graph_.modeled]
    n = np.maximum(bv.count[:, mod], 1).astype(float)
    g = np.array([p.characteristics[i].gauge_sigma for i in mod]) / model.std_.scale
    return P.sbar**2 * np.maximum(1.0 / n - 1.0 / p.bars_per_batch, 0.0) + g**2 / n


def _plan_effective(model: CausalModel, bv: BatchView, plan) -> np.ndarray:
    """Full lever vector: history for levers at steps <= k, ``do`` and ``plan`` after."""
    p = model.graph_.process
    out = p.nominal_plan() if plan is None else _as_plan(p, plan)
    for i, v in model.held_levers.items():
        out[i] = v
    past = ~p.free_levers(bv.step)
    out[past] = bv.levers[past]
    return out


def _as_plan(p, plan) -> np.ndarray:
    if isinstance(plan, dict):
        out = p.nominal_plan()
        for k, v in plan.items():
            if k not in p.lever_index:
                raise KeyError(f"unknown lever '{k}'; known: {list(p.lever_index)}")
            out[p.lever_index[k]] = float(v)
        return out
    arr = np.asarray(plan, dtype=np.float64).copy()
    if arr.shape != (len(p.levers),):
        raise ValueError(f"a plan has shape ({len(p.levers)},), got {arr.shape}")
    return arr


@dataclass
class _Filtered:
    P: Params
    n_seg: int
    mean: np.ndarray      # (S, J, d)
    cov: np.ndarray       # (S, J, d, d)
    weight: np.ndarray    # (S, J) posterior component weights per draw
    comp_seg: np.ndarray  # (J,)
    loglik: np.ndarray    # (S, J)


def _filter_batch(model: CausalModel, bv: BatchView, P: Params, levers: np.ndarray,
                  n_seg: int | None = None) -> _Filtered:
    n_seg = bv.q_last + 1 if n_seg is None else n_seg
    Q = P.A.shape[1]
    u = _injection(model, P, levers, bv.day)
    R = _obs_var(model, P, bv)
    obs = np.isfinite(bv.z)
    obs[n_seg:] = False
    z = np.nan_to_num(bv.z)
    segs = [r for r in range(max(n_seg, 0)) if (P.pi[:, r] > 0).any()]
    prior, comp = _filter.component_log_weights(P.pi[:, :max(n_seg, 0)], segs)
    if n_seg <= 0:
        S, d = P.A.shape[0], P.A.shape[2]
        return _Filtered(P, 0, np.zeros((S, 1, d)), np.zeros((S, 1, d, d)), np.ones((S, 1)),
                         comp[:1], np.zeros((S, 1)))
    args = (P.A, u, P.tau**2, P.m, R, z, obs, P.tauf**2, comp, n_seg)
    if P.mix is not None:
        args = _split_mix(*args, P.mix)
    mean, cov, ll = _filter.kalman(*(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a
                                     for a in args))
    lw = prior + ll
    lw -= lw.max(axis=1, keepdims=True)
    w = np.exp(lw)
    w /= w.sum(axis=1, keepdims=True)
    return _Filtered(P, n_seg, mean, cov, w, comp, ll)


def _split_mix(A, u, noise_var, m, R, z, obs, extra_var, comp, n_seg, mix):
    """The filter's inputs with each segment split in two, so that the diagonal
    filter (``_filter.kalman``) runs a model with within-step edges.

    ``x_q = A_q x_{q-1} + u_q + mix_q w_q`` (``A_q`` and ``u_q`` already hold
    ``mix_q``) is the same as ``x'_q = mix_q^-1 (A_q x_{q-1} + u_q) + w_q``
    (diagonal noise, no reading) followed by ``x_q = mix_q x'_q`` (no noise,
    the readings). Segment ``q`` becomes filter steps ``2q`` and ``2q + 1``.
    """
    S, Q, d = u.shape
    inv = np.linalg.inv(mix)
    A2 = np.empty((S, 2 * Q, d, d))
    A2[:, 0::2] = inv @ A
    A2[:, 1::2] = mix
    u2 = np.zeros((S, 2 * Q, d))
    u2[:, 0::2] = np.einsum("sqab,sqb->sqa", inv, u)
    nv = np.zeros((S, 2 * Q, d))
    nv[:, 0::2] = noise_var
    ev = np.zeros((S, 2 * Q, d))
    ev[:, 0::2] = extra_var
    m2 = np.zeros((S, 2 * Q, d))
    m2[:, 1::2] = m
    R2 = np.ones((S, 2 * Q, d))
    R2[:, 1::2] = R
    z2 = np.zeros((2 * Q, d))
    z2[1::2] = z
    obs2 = np.zeros((2 * Q, d), dtype=bool)
    obs2[1::2] = obs
    comp2 = np.where(comp >= 0, 2 * comp, comp)
    return A2, u2, nv, m2, R2, z2, obs2, ev, comp2, 2 * n_seg


def _transition(P: Params, q_from: int, q_to: int) -> np.ndarray:
    """Product ``A_{q_to} ... A_{q_from + 1}``: (S, d, d) (identity when equal)."""
    S, _, d, _ = P.A.shape
    M = np.broadcast_to(np.eye(d), (S, d, d)).copy()
    for q in range(q_from + 1, q_to + 1):
        M = P.A[:, q] @ M
    return M


def hdi(samples: np.ndarray, prob: float = HDI_PROB) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval along axis 0 (narrowest interval holding ``prob``).

    Parameters
    ----------
    samples : ndarray (n, ...)
    prob : float

    Returns
    -------
    low, high : ndarray (...)
    """
    x = np.sort(samples, axis=0)
    n = x.shape[0]
    k = max(int(math.floor(prob * n)), 1)
    if k >= n:
        return x[0], x[-1]
    width = x[k:] - x[: n - k]
    i = np.argmin(width, axis=0)
    lo = np.take_along_axis(x, i[None], axis=0)[0]
    hi = np.take_along_axis(x, (i + k)[None], axis=0)[0]
    return lo, hi


# ---------------------------------------------------------------------------
# Out-of-range checks
# ---------------------------------------------------------------------------

def _batch_out_of_range(model: CausalModel, bv: BatchView) -> list[str]:
    p = model.graph_.process
    rg = model.ranges_
    reasons = []
    for q in range(bv.q_last + 1):
        for c, ch in enumerate(p.characteristics):
            v = bv.mean[q, c]
            lo, hi = rg.mean_low[q, c], rg.mean_high[q, c]
            if not np.isfinite(v):
                continue
            if not np.isfinite(lo):
                reasons.append(f"{ch.name} at step {p.inspections[q].step} was never gauged in "
                               "the training data")
                continue
            pad = 0.1 * (hi - lo)
            if v < lo - pad or v > hi + pad:
                reasons.append(f"{ch.name} at step {p.inspections[q].step} is {v:.5g} {ch.unit}; "
                               f"training data ranged {lo:.5g}..{hi:.5g}")
    d2, d2max = model.cloud_.distance(bv.q_last, bv.mean[bv.q_last]) if bv.q_last >= 0 else (None, 0.0)
    if d2 is not None and d2 > d2max:
        reasons.append(f"the readings at step {p.inspections[bv.q_last].step} are jointly further "
                       f"from the training batches than any of them (Mahalanobis^2 {d2:.0f} > {d2max:.0f})")
    return reasons


def _plan_out_of_range(model: CausalModel, bv: BatchView, plans: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    p = model.graph_.process
    rg = model.ranges_
    future = p.free_levers(bv.step)
    # the same 10% margin of the seen span as for readings: history explores
    # levers at random, so the values seen stop just short of the hard bounds
    pad = 0.1 * (rg.lever_high - rg.lever_low) + 1e-9 * np.maximum(1.0, np.abs(rg.lever_high))
    bad = ((plans < rg.lever_low - pad) | (plans > rg.lever_high + pad)) & future
    reasons = []
    for i in range(len(plans)):
        reasons.append([f"{p.levers[j].name} = {plans[i, j]:.4g} {p.levers[j].unit} lies outside the "
                        f"values seen in training ({rg.lever_low[j]:.4g}..{rg.lever_high[j]:.4g}, "
                        f"with a 10% margin)"
                        for j in np.flatnonzero(bad[i])])
    return bad.any(axis=1), reasons




def _sample_components(f: _Filtered, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Samples of the filtered state: (S, k, d) and the chosen component (S, k)."""
    S, J, d = f.mean.shape
    cum = np.cumsum(f.weight, axis=1)
    u = rng.random((S, k))
    j = np.minimum((u[:, :, None] > cum[:, None, :]).sum(axis=2), J - 1)
    L = np.linalg.cholesky(f.cov + 1e-12 * np.eye(d))
    eps = rng.standard_normal((S, k, d))
    mean = np.take_along_axis(f.mean, j[:, :, None], axis=1)
    chol = L[np.arange(S)[:, None], j]
    return mean + np.einsum("skab,skb->ska", chol, eps), j



def _crack_state(model, bv: BatchView, rng: np.random.Generator, n: int) -> np.ndarray | None:
    """Samples of the batch's share of cracked bars now (None: never gauged yet)."""
    cm = model.crack_
    if cm.char is None:
        return None
    p = model.graph_.process
    ci = p.char_index[cm.char]
    qs = [q for q in range(bv.q_last + 1) if np.isfinite(bv.mean[q, ci])]
    if not qs:
        return None
    q = qs[-1]
    k_n = int(bv.count[q, ci])
    k = int(round(bv.mean[q, ci] * k_n))
    if k > 0:
        return rng.beta(1 + k, 1 + k_n - k, n)
    # No crack in the sample: the batch is clean, or cracked on bars not gauged.
    i = list(cm.steps).index(p.inspections[q].step)
    omega = 1.0 - np.prod([1.0 - r for r in cm.rate[: i + 1]])
    w_cracked = omega / (k_n + 1) / (omega / (k_n + 1) + (1 - omega))
    cracked = rng.random(n) < w_cracked
    return np.where(cracked, rng.beta(1, 1 + k_n, n), 0.0)

