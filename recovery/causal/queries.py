"""Per-batch queries on a fitted :class:`~recovery.causal.model.CausalModel`.

Each query takes one batch's step data up to some step ``k`` and answers from
the stored posterior draws, without any per-batch MCMC:

- :func:`state`: the hidden batch-mean characteristics at the last inspection
  up to ``k`` (a Kalman filter per draw, fault-shift mixture included);
- :func:`predict` / :func:`predict_many`: the final characteristics and
  P(accept) under lever plans for the steps after ``k``;
- :func:`root_cause`: posterior probabilities over (step, fault or
  characteristic) as the origin of the deviation, with the causal path in words.

Every answer says whether the batch or the plan lies outside what the training
data cover (``out_of_range`` and ``reasons``), instead of extrapolating silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recovery.causal import _filter
from recovery.causal.model import CausalModel, DataError, Params, summarise

__all__ = [
    "BatchView", "Estimate", "StateEstimate", "Prediction", "PlanPredictions", "Cause",
    "RootCause", "StateDraws", "view", "batches_in", "state", "state_draws", "predict", "predict_many",
    "root_cause", "hdi",
]

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
    model._check_fitted()
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
        lo, hi = p.gate_bands(ins.step)
        with np.errstate(invalid="ignore"):
            flags[q] = bool(((s.mean[0, q] < lo) | (s.mean[0, q] > hi)).any())
    levers = s.levers[0].copy()
    later = np.array([lv.step > int(s.last_step[0]) for lv in p.levers], dtype=bool)
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
    for i, v in getattr(model, "_do", {}).items():
        out[i] = v
    past = np.array([lv.step <= bv.step for lv in p.levers], dtype=bool)
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
    mean, cov, ll = _filter.kalman(np.ascontiguousarray(P.A), np.ascontiguousarray(u),
                                   np.ascontiguousarray(P.tau**2), np.ascontiguousarray(P.m),
                                   np.ascontiguousarray(R), np.ascontiguousarray(z), obs,
                                   np.ascontiguousarray(P.tauf**2), comp, n_seg)
    lw = prior + ll
    lw -= lw.max(axis=1, keepdims=True)
    w = np.exp(lw)
    w /= w.sum(axis=1, keepdims=True)
    return _Filtered(P, n_seg, mean, cov, w, comp, ll)


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
    d2, d2max = _mahalanobis(model, bv)
    if d2 is not None and d2 > d2max:
        reasons.append(f"the readings at step {p.inspections[bv.q_last].step} are jointly further "
                       f"from the training batches than any of them (Mahalanobis^2 {d2:.0f} > {d2max:.0f})")
    return reasons


def _mahalanobis(model: CausalModel, bv: BatchView) -> tuple[float | None, float]:
    """Squared Mahalanobis distance of the last readings from the training cloud,
    and the largest such distance among the training batches themselves."""
    q = bv.q_last
    if q < 0:
        return None, 0.0
    cache = model.__dict__.setdefault("_maha_cache", {})
    obs = np.isfinite(bv.mean[q])
    key = (q, tuple(obs))
    if key not in cache:
        X = model.summaries_.mean[:, q][:, obs]
        X = X[np.isfinite(X).all(axis=1)]
        if len(X) < obs.sum() + 5:
            cache[key] = None
        else:
            mu = X.mean(axis=0)
            cov = np.cov(X, rowvar=False).reshape(obs.sum(), obs.sum())
            cov += 1e-12 * np.eye(len(mu)) * np.maximum(np.diag(cov), 1e-30)
            prec = np.linalg.pinv(cov)
            d2 = np.einsum("bi,ij,bj->b", X - mu, prec, X - mu)
            cache[key] = (mu, prec, float(d2.max()))
    if cache[key] is None:
        return None, 0.0
    mu, prec, d2max = cache[key]
    x = bv.mean[q][obs] - mu
    return float(x @ prec @ x), d2max


def _plan_out_of_range(model: CausalModel, bv: BatchView, plans: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    p = model.graph_.process
    rg = model.ranges_
    future = np.array([lv.step > bv.step for lv in p.levers], dtype=bool)
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


# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """Posterior summary of one characteristic (physical units)."""

    mean: float
    hdi_low: float
    hdi_high: float
    unit: str

    def to_dict(self) -> dict:
        return {"mean": self.mean, "hdi_low": self.hdi_low, "hdi_high": self.hdi_high, "unit": self.unit}


@dataclass(frozen=True)
class StateEstimate:
    """The posterior of a batch's hidden batch-mean characteristics.

    Attributes
    ----------
    batch_id : str
    step : int
        Inspection step the estimate refers to (the last one in the history).
    variables : dict[str, Estimate]
        Characteristics whose level is identified at ``step``: gauged there,
        or gauged earlier and left alone since. ``crack`` is the share of
        cracked bars.
    fault_probability : dict[int, float]
        Posterior probability of a fault shift in the segment ending at each
        inspection step (the robust mixture; the "two faults or more"
        component counts for every segment).
    out_of_range : bool
    reasons : tuple[str, ...]
    """

    batch_id: str
    step: int
    variables: dict
    fault_probability: dict
    out_of_range: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {k: v.to_dict() for k, v in self.variables.items()}


def _identified(model: CausalModel, q: int) -> dict[int, int]:
    """For each modelled characteristic whose level is known at inspection q:
    the inspection whose mean parameter anchors it."""
    segs = model.graph_.segments()
    gauged = model.layout_.gauged
    out = {}
    for c in range(gauged.shape[1]):
        for q0 in range(q, -1, -1):
            if gauged[q0, c]:
                out[c] = q0
                break
            if segs[q0].acted[c]:
                break
    return out


def state(model: CausalModel, history: pd.DataFrame, *, batch: str | None = None,
          n_draws: int | None = None, samples_per_draw: int = 4, seed: int = 0,
          hdi_prob: float = HDI_PROB) -> StateEstimate:
    """Posterior of the batch's hidden characteristics at its last inspection.

    Parameters
    ----------
    model : CausalModel
        Fitted.
    history : DataFrame
        The batch's step data up to some step ``k`` (schema).
    batch : str, optional
        Which batch, when the table holds several.
    n_draws : int, optional
        Posterior draws to use (default: all kept).
    samples_per_draw : int
        State samples per draw for the interval.
    seed : int
    hdi_prob : float

    Returns
    -------
    StateEstimate
    """
    bv = view(model, history, batch)
    P = _draws(model, n_draws)
    f = _filter_batch(model, bv, P, _plan_effective(model, bv, None))
    return _state_from(model, bv, f, samples_per_draw, seed, hdi_prob)


@dataclass(frozen=True)
class StateDraws:
    """Joint posterior draws of a batch's hidden batch-mean state at its last inspection.

    Attributes
    ----------
    batch_id : str
    step : int
        The inspection step the draws refer to (0: before any inspection).
    day : float
        The batch's production day.
    names : tuple of str
        The modelled characteristics, in the order of ``values``' columns.
    values : ndarray (n, d)
        Physical units. Where ``absolute`` holds, the batch mean itself; elsewhere
        (a characteristic not gauged since a step last acted on it) its deviation
        from the batch mean of a healthy batch under nominal levers.
    absolute : ndarray (d,) bool
    crack : ndarray (n,) or None
        Share of cracked bars (None: crack never gauged yet).
    out_of_range : bool
    reasons : tuple of str
    """

    batch_id: str
    step: int
    day: float
    names: tuple[str, ...]
    values: np.ndarray
    absolute: np.ndarray
    crack: np.ndarray | None
    out_of_range: bool
    reasons: tuple[str, ...]


def state_draws(model: CausalModel, history: pd.DataFrame, n: int, *, batch: str | None = None,
                seed: int = 0) -> StateDraws:
    """``n`` joint draws of the batch's hidden state at its last inspection.

    Each draw takes a posterior parameter draw and a sample of the filtered
    state under it (fault-shift component included), so the draws carry both
    the parameter and the state uncertainty, and the correlations between
    characteristics. Used to start simulator rollouts from what is known
    about the batch (``recovery.agents.rollouts``).

    Parameters
    ----------
    model : CausalModel
    history : DataFrame
        The batch's step data up to some step (schema).
    n : int
    batch : str, optional
    seed : int

    Returns
    -------
    StateDraws
    """
    p = model.graph_.process
    g, std = model.graph_, model.std_
    bv = view(model, history, batch)
    rng = np.random.default_rng(seed)
    P = _draws(model, None)
    d = len(g.modeled)
    q = bv.q_last
    absolute = np.zeros(d, dtype=bool)
    if q < 0:
        return StateDraws(bv.batch_id, 0, bv.day, tuple(g.modeled), np.zeros((n, d)), absolute, None,
                          False, ())
    f = _filter_batch(model, bv, P, _plan_effective(model, bv, None))
    S = P.A.shape[0]
    k = -(-n // S)
    X, _ = _sample_components(f, k, rng)                      # (S, k, d)
    pick = rng.permutation(S * k)[:n]
    s_idx, k_idx = np.divmod(pick, k)
    x = X[s_idx, k_idx]                                       # (n, d) standardised deviations
    values = x * std.scale
    for c, q0 in _identified(model, q).items():
        absolute[c] = True
        values[:, c] = std.centre[q0, c] + std.scale[c] * (P.m[s_idx, q0, c] + x[:, c])
    crack = _crack_state(model, bv, rng, n) if g.crack else None
    reasons = _batch_out_of_range(model, bv)
    return StateDraws(bv.batch_id, int(p.inspections[q].step), bv.day, tuple(g.modeled), values, absolute,
                      crack, bool(reasons), tuple(reasons))


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


def _state_from(model, bv, f: _Filtered, k, seed, hdi_prob) -> StateEstimate:
    p = model.graph_.process
    g, std = model.graph_, model.std_
    rng = np.random.default_rng(seed)
    variables = {}
    q = bv.q_last
    if q >= 0:
        X, _ = _sample_components(f, k, rng)
        S = X.shape[0]
        for c, q0 in _identified(model, q).items():
            vals = std.centre[q0, c] + std.scale[c] * (f.P.m[:, q0, c][:, None] + X[:, :, c])
            vals = vals.reshape(-1)
            lo, hi = hdi(vals, hdi_prob)
            name = g.modeled[c]
            variables[name] = Estimate(float(vals.mean()), float(lo), float(hi), p.characteristic(name).unit)
        for name in g.crack:
            est = _crack_state(model, bv, rng, S * k)
            if est is not None:
                lo, hi = hdi(est, hdi_prob)
                variables[name] = Estimate(float(est.mean()), float(lo), float(hi), p.characteristic(name).unit)
        variables = {c.name: variables[c.name] for c in p.characteristics if c.name in variables}
    several = f.weight[:, f.comp_seg == _filter.SEVERAL].sum(axis=1).mean()
    fault = {int(p.inspections[r].step): float(f.weight[:, j].mean() + several)
             for j, r in enumerate(f.comp_seg) if r >= 0}
    reasons = _batch_out_of_range(model, bv)
    step = p.inspections[q].step if q >= 0 else 0
    return StateEstimate(bv.batch_id, step, variables, fault, bool(reasons), tuple(reasons))


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


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    """Posterior predictive at the end of the process under one plan.

    Attributes
    ----------
    batch_id : str
    step : int
        Last step of the history the prediction starts from.
    plan : ndarray (n_levers,)
        Lever values used (history for past levers, ``do`` values, the plan).
    p_accept : float
        Posterior mean probability that the batch is accepted.
    p_accept_low, p_accept_high : float
        94% credible interval of that probability over the posterior draws.
    final : dict[str, Estimate]
        Final batch means (crack: share of cracked bars).
    p_in_band : dict[str, float]
        Expected share of bars inside each final band.
    out_of_range : bool
    reasons : tuple[str, ...]
    """

    batch_id: str
    step: int
    plan: np.ndarray
    p_accept: float
    p_accept_low: float
    p_accept_high: float
    final: dict
    p_in_band: dict
    out_of_range: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanPredictions:
    """P(accept) of many plans for one batch.

    Attributes
    ----------
    plans : ndarray (P, n_levers)
        Effective lever values (past levers as in the history).
    p_accept : ndarray (P,)
    low, high : ndarray (P,)
        94% credible interval over draws.
    draws : ndarray (P, S)
        P(accept) under each posterior draw.
    out_of_range : ndarray (P,) bool
        Plan uses lever values the training data never saw, or the batch is
        out of range.
    batch_out_of_range : bool
    reasons : list of list of str
    """

    plans: np.ndarray
    p_accept: np.ndarray
    low: np.ndarray
    high: np.ndarray
    draws: np.ndarray
    out_of_range: np.ndarray
    batch_out_of_range: bool
    reasons: list = field(default_factory=list)
    distance: np.ndarray | None = None
    """(P,) expected distance of the final batch means outside their bands, in
    band widths (0 inside): a slope for a search where P(accept) is flat."""


@dataclass
class _Forecast:
    """Everything plan-independent for one history (reused across plans)."""

    bv: BatchView
    X0: np.ndarray        # (S, K, d) final standardised state without the plan part
    Kfut: np.ndarray      # (S, d, F)
    base: np.ndarray      # (S, d) physical value of standardised 0 at the end
    sbar: np.ndarray      # (S, d) physical
    crack_ok: np.ndarray  # (S, K)
    crack_frac: np.ndarray
    use: np.ndarray       # (d,) bool
    batch_reasons: list
    filtered: _Filtered


def _forecast(model: CausalModel, bv: BatchView, n_draws, samples_per_draw, seed) -> _Forecast:
    p = model.graph_.process
    std = model.std_
    P = _draws(model, n_draws)
    rng = np.random.default_rng(seed)
    Q = P.A.shape[1]
    S, _, d, F = P.B.shape
    qk = bv.q_last
    # Past levers are facts; the plan's part is added per plan (linear in its features).
    hist_levers = _plan_effective(model, bv, None)
    f = _filter_batch(model, bv, P, hist_levers)
    t = (bv.day - std.day_ref) / 100.0
    if qk >= 0:
        Xk, _ = _sample_components(f, samples_per_draw, rng)
    else:
        Xk = np.zeros((S, samples_per_draw, d))
    Phi = _transition(P, qk, Q - 1) if qk >= 0 else None
    X = np.einsum("sab,skb->ska", Phi, Xk) if qk >= 0 else np.zeros_like(Xk)
    Kfut = np.zeros((S, d, F))
    for q in range(max(qk + 1, 0), Q):
        M = _transition(P, q, Q - 1)
        X = X + np.einsum("sab,sb->sa", M, P.G[:, q] * t)[:, None, :]
        Kfut += M @ P.B[:, q]
        noise = P.tau[:, q][:, None, :] * rng.standard_normal((S, samples_per_draw, d))
        X = X + np.einsum("sab,skb->ska", M, noise + _future_faults(model, P, q, samples_per_draw, rng))
    mod = [p.char_index[c] for c in model.graph_.modeled]
    lo, hi = p.final_bands()
    use = model.layout_.gauged[Q - 1].copy()
    base = std.centre[Q - 1] + std.scale * P.m[:, Q - 1]
    sbar = P.sbar[:, Q - 1] * std.scale
    crack_frac = _crack_forecast(model, bv, rng, S, samples_per_draw)
    crack_ok = 1.0 - crack_frac
    return _Forecast(bv, np.ascontiguousarray(X), np.ascontiguousarray(Kfut), np.ascontiguousarray(base),
                     np.ascontiguousarray(sbar), np.ascontiguousarray(crack_ok), crack_frac, use,
                     _batch_out_of_range(model, bv), f)


def _future_faults(model: CausalModel, P: Params, q: int, K: int, rng: np.random.Generator,
                   min_sd: float = 2.0) -> np.ndarray:
    """Fault shifts in a future segment ``q``: (S, K, d), standardised.

    Each catalogue fault of the segment strikes at its catalogue rate and moves
    only the characteristics of its signature, in the signature's direction,
    by a half-normal amount with the fitted fault-shift scale. What the fitted
    fault rate holds beyond the catalogue strikes as the fit's generic shift
    (every characteristic the segment acts on).
    """
    p, g = model.graph_.process, model.graph_
    S, _, d = P.tauf.shape
    seg = g.segments()[q]
    mi = g.modeled_index
    scale = P.tauf[:, q].copy()
    if q + 1 < P.tauf.shape[1]:
        scale = np.where(scale > 0, scale, P.tauf[:, q + 1])
    scale = np.maximum(scale, min_sd)
    out = np.zeros((S, K, d))
    catalogue = 0.0
    for fi, sig in zip(seg.faults, seg.signatures):
        rate = p.faults[fi].rate
        catalogue += rate
        hit = rng.random((S, K)) < rate
        for name, sign in sig.items():
            if name not in mi:
                continue
            c = mi[name]
            sg = sign if sign != 0 else np.where(rng.random((S, K)) < 0.5, -1.0, 1.0)
            out[:, :, c] += hit * sg * np.abs(rng.standard_normal((S, K))) * scale[:, c][:, None]
    extra = np.maximum(P.pi[:, q] - catalogue, 0.0)
    hit = rng.random((S, K)) < extra[:, None]
    out += hit[:, :, None] * P.tauf[:, q][:, None, :] * rng.standard_normal((S, K, d))
    return out


def _crack_forecast(model, bv: BatchView, rng, S: int, K: int) -> np.ndarray:
    """Share of cracked bars at the end: now, plus new cracking later (S, K)."""
    cm = model.crack_
    if cm.char is None:
        return np.zeros((S, K))
    p = model.graph_.process
    now = _crack_state(model, bv, rng, S * K)
    frac = np.zeros(S * K) if now is None else now
    for i, step in enumerate(cm.steps):
        if step <= p.inspections[max(bv.q_last, 0)].step and bv.q_last >= 0 and now is not None:
            continue
        hit = rng.random(S * K) < cm.rate[i]
        new = rng.beta(cm.alpha[i], cm.beta[i], S * K)
        frac = frac + (1.0 - frac) * np.where(hit, new, 0.0)
    return frac.reshape(S, K)


def _accept(model: CausalModel, fc: _Forecast, plans_eff: np.ndarray) -> np.ndarray:
    p = model.graph_.process
    lo, hi = p.final_bands()
    mod = [p.char_index[c] for c in model.graph_.modeled]
    phi = np.ascontiguousarray(model.std_.features(plans_eff))
    need = int(math.ceil(p.acceptance_level * p.bars_per_batch - 1e-9))
    logc = _filter.log_binomial_coefficients(p.bars_per_batch)
    return _filter.accept_probability(fc.X0, fc.Kfut, phi, fc.base, np.ascontiguousarray(model.std_.scale),
                                      np.ascontiguousarray(lo[mod]), np.ascontiguousarray(hi[mod]),
                                      fc.sbar, fc.use, fc.crack_ok, p.bars_per_batch, need, logc)


def _distance(model: CausalModel, fc: _Forecast, plans_eff: np.ndarray) -> np.ndarray:
    p = model.graph_.process
    lo, hi = p.final_bands()
    mod = [p.char_index[c] for c in model.graph_.modeled]
    phi = np.ascontiguousarray(model.std_.features(plans_eff))
    return _filter.band_distance(fc.X0, fc.Kfut, phi, fc.base, np.ascontiguousarray(model.std_.scale),
                                 np.ascontiguousarray(lo[mod]), np.ascontiguousarray(hi[mod]), fc.use)


def _plans_effective(model, bv, plans) -> np.ndarray:
    p = model.graph_.process
    plans = np.atleast_2d(np.asarray(plans, dtype=np.float64)).copy()
    if plans.shape[1] != len(p.levers):
        raise ValueError(f"plans must have shape (n_plans, {len(p.levers)}), got {plans.shape}")
    for i, v in getattr(model, "_do", {}).items():
        plans[:, i] = v
    past = np.array([lv.step <= bv.step for lv in p.levers], dtype=bool)
    plans[:, past] = bv.levers[past]
    return plans


def predict(model: CausalModel, history: pd.DataFrame, plan=None, *, batch: str | None = None,
            n_draws: int | None = None, samples_per_draw: int = 4, seed: int = 0,
            hdi_prob: float = HDI_PROB) -> Prediction:
    """Posterior predictive of the final characteristics and of acceptance under a plan.

    Parameters
    ----------
    model : CausalModel
    history : DataFrame
        The batch's step data up to step ``k``.
    plan : ndarray (n_levers,) or dict lever -> value, optional
        Lever values for steps after ``k`` (levers at or before ``k`` keep
        their history values). Default: nominal.
    batch : str, optional
    n_draws, samples_per_draw, seed, hdi_prob
        Monte Carlo settings.

    Returns
    -------
    Prediction
    """
    bv = view(model, history, batch)
    fc = _forecast(model, bv, n_draws, samples_per_draw, seed)
    p = model.graph_.process
    eff = _plans_effective(model, bv, _as_plan(p, nominal_if_none(p, plan)))
    pa = _accept(model, fc, eff)[0]
    lo_a, hi_a = hdi(pa, hdi_prob)
    std, g = model.std_, model.graph_
    phi = std.features(eff[0])
    x = fc.base[:, None, :] + std.scale * (fc.X0 + np.einsum("sdf,f->sd", fc.Kfut, phi)[:, None, :])
    lo_b, hi_b = p.final_bands()
    mod = [p.char_index[c] for c in g.modeled]
    final, inband = {}, {}
    from scipy.stats import norm
    for c, name in enumerate(g.modeled):
        if not fc.use[c]:
            continue
        vals = x[:, :, c].reshape(-1)
        lo, hi = hdi(vals, hdi_prob)
        final[name] = Estimate(float(vals.mean()), float(lo), float(hi), p.characteristic(name).unit)
        sd = np.maximum(fc.sbar[:, None, c], 1e-300)
        inband[name] = float((norm.cdf((hi_b[mod[c]] - x[:, :, c]) / sd)
                              - norm.cdf((lo_b[mod[c]] - x[:, :, c]) / sd)).mean())
    for name in g.crack:
        vals = fc.crack_frac.reshape(-1)
        lo, hi = hdi(vals, hdi_prob)
        final[name] = Estimate(float(vals.mean()), float(lo), float(hi), p.characteristic(name).unit)
        inband[name] = float(1.0 - vals.mean())
    final = {c.name: final[c.name] for c in p.characteristics if c.name in final}
    bad, why = _plan_out_of_range(model, bv, eff)
    reasons = tuple(fc.batch_reasons + why[0])
    return Prediction(bv.batch_id, bv.step, eff[0], float(pa.mean()), float(lo_a), float(hi_a), final,
                      inband, bool(reasons), reasons)


def nominal_if_none(p, plan):
    return p.nominal_plan() if plan is None else plan


def predict_many(model: CausalModel, history: pd.DataFrame, plans: np.ndarray, *,
                 batch: str | None = None, n_draws: int | None = 300, samples_per_draw: int = 4,
                 seed: int = 0, hdi_prob: float = HDI_PROB) -> PlanPredictions:
    """P(accept) of many lever plans for one batch, with common random numbers.

    The plan-independent work (filter, forecast samples) is done once; each
    plan then costs one pass of the acceptance kernel, so a planner can score
    hundreds of plans in well under a second. Every plan sees the same state
    samples, so differences between plans are plan effects, not noise.

    Parameters
    ----------
    model : CausalModel
    history : DataFrame
    plans : ndarray (n_plans, n_levers)
        Lever values; levers at or before the history's last step are replaced
        by their history values.
    batch : str, optional
    n_draws : int, optional
        Posterior draws (default 300; None: all kept).
    samples_per_draw, seed, hdi_prob

    Returns
    -------
    PlanPredictions

    Examples
    --------
    >>> # plans = np.tile(process.nominal_plan(), (64, 1)); plans[:, 1] = np.linspace(300, 500, 64)
    >>> # model.predict_many(history, plans).p_accept.argmax()
    """
    bv = view(model, history, batch)
    fc = _forecast(model, bv, n_draws, samples_per_draw, seed)
    eff = _plans_effective(model, bv, plans)
    pa = _accept(model, fc, eff)
    lo, hi = hdi(pa.T, hdi_prob)
    bad, why = _plan_out_of_range(model, bv, eff)
    batch_bad = bool(fc.batch_reasons)
    reasons = [fc.batch_reasons + w for w in why]
    return PlanPredictions(eff, pa.mean(axis=1), lo, hi, pa, bad | batch_bad, batch_bad, reasons,
                           _distance(model, fc, eff))


# ---------------------------------------------------------------------------
# root cause
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Cause:
    """One hypothesis about where a batch's deviation began.

    Attributes
    ----------
    step : int
        The fault's step, or for an unexplained deviation the first step of
        the segment that acts on the characteristic.
    cause : str
        A fault type of the catalogue, or a characteristic name.
    kind : {"fault", "characteristic"}
    probability : float
        Posterior probability, given that the batch deviates.
    path : str
        The causal path from the cause to the flag and to the final bands, in words.
    """

    step: int
    cause: str
    kind: str
    probability: float
    path: str

    def to_dict(self) -> dict:
        return {"step": self.step, "cause": self.cause, "probability": self.probability, "path": self.path}


@dataclass(frozen=True)
class RootCause:
    """Posterior over the origin of a batch's deviation.

    Attributes
    ----------
    batch_id : str
    step : int
        Inspection the diagnosis is made at (the first that flags the batch,
        else the last in the history).
    flagged : bool
    causes : tuple[Cause, ...]
        Sorted by probability, highest first.
    p_deviation : float
        Posterior probability that the batch deviates at all (versus ordinary variation).
    out_of_range : bool
    reasons : tuple[str, ...]
    """

    batch_id: str
    step: int
    flagged: bool
    causes: tuple
    p_deviation: float
    out_of_range: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Hyp:
    seg: int
    step: int
    cause: str
    kind: str
    chars: tuple[int, ...]       # modelled characteristics the shift moves
    signs: tuple[int, ...]       # +1, -1, 0
    crack: bool                  # it may crack bars
    log_prior: float


def _hypotheses(model: CausalModel, qf: int, unexplained_rate: float) -> list[_Hyp]:
    p, g = model.graph_.process, model.graph_
    segs = g.segments()
    mi = g.modeled_index
    rel = model.layout_.relevant
    out = []
    for r in range(qf + 1):
        seg = segs[r]
        for fi, sig in zip(seg.faults, seg.signatures):
            f = p.faults[fi]
            chars = tuple(mi[c] for c in sig if c in mi and rel[r, mi[c]])
            signs = tuple(sig[g.modeled[c]] for c in chars)
            crack = any(c not in mi for c in sig)
            out.append(_Hyp(r, f.step, f.name, "fault", chars, signs, crack, math.log(max(f.rate, 1e-6))))
        for c in np.flatnonzero(seg.acted & rel[r]):
            first = next(k for k in seg.steps if (k, g.modeled[c]) in g.acts)
            out.append(_Hyp(r, first, g.modeled[c], "characteristic", (int(c),), (0,), False,
                            math.log(unexplained_rate)))
        for name in g.crack:
            if any((k, name) in g.acts for k in seg.steps) and r > 0:
                first = next(k for k in seg.steps if (k, name) in g.acts)
                out.append(_Hyp(r, first, name, "characteristic", (), (), True, math.log(unexplained_rate)))
    return out


def root_cause(model: CausalModel, history: pd.DataFrame, *, batch: str | None = None,
               n_draws: int | None = 500, unexplained_rate: float = 0.002,
               min_fault_sd: float = 2.0, top: int | None = None, seed: int = 0) -> RootCause:
    """Posterior probability over (step, fault type or characteristic) as the origin of the deviation.

    The diagnosis uses the readings up to the first inspection that flags the
    batch (as an engineer would; a shift that later steps shrink is clearest
    there), or all readings when none flags it. Hypotheses:

    - each catalogue fault at a step up to that inspection, shifting the
      characteristics of its signature (``KINDS[kind].fault_effects``, mapped
      through the graph) with the signs the signature gives; prior: its
      catalogue rate;
    - "characteristic c deviated in segment r" (no catalogue fault explains
      it); prior: ``unexplained_rate``.

    Each hypothesis's shift magnitude is integrated out (normal prior with the
    fitted fault-shift scale, sign-constrained where the signature has a sign),
    in closed form for every posterior draw; cracks found by the gauges count
    through a beta-binomial. Probabilities are averaged over draws and
    normalised over the hypotheses.

    Parameters
    ----------
    model : CausalModel
    history : DataFrame
    batch : str, optional
    n_draws : int, optional
    unexplained_rate : float
        Prior probability per batch of an unexplained shift of one
        characteristic in one segment.
    min_fault_sd : float
        Floor on the prior shift scale (standardised units).
    top : int, optional
        Keep only the most probable causes.
    seed : int

    Returns
    -------
    RootCause
    """
    bv = view(model, history, batch)
    p, g, std = model.graph_.process, model.graph_, model.std_
    P = _draws(model, n_draws)
    S, Q, d, _ = P.A.shape
    qf = bv.first_flag if bv.first_flag is not None else bv.q_last
    reasons = _batch_out_of_range(model, bv)
    if qf < 0:
        return RootCause(bv.batch_id, 0, False, (), 0.0, bool(reasons), tuple(reasons))
    levers = _plan_effective(model, bv, None)
    u = _injection(model, P, levers, bv.day)
    R = _obs_var(model, P, bv)
    rows = [(q, c) for q in range(qf + 1) for c in range(d) if np.isfinite(bv.z[q, c])]
    rq = np.array([q for q, _ in rows])
    rc = np.array([c for _, c in rows])
    # joint Gaussian of the readings under "no shift", per draw
    mu = np.zeros((S, Q, d))
    prev = np.zeros((S, d))
    for q in range(qf + 1):
        prev = np.einsum("sab,sb->sa", P.A[:, q], prev) + u[:, q]
        mu[:, q] = prev
    Lam = {}
    for r in range(qf + 1):
        M = np.broadcast_to(np.eye(d), (S, d, d)).copy()
        for q in range(r, qf + 1):
            if q > r:
                M = P.A[:, q] @ M
            Lam[(q, r)] = M
    Gl = []
    for r in range(qf + 1):
        Gr = np.zeros((S, len(rows), d))
        for i, (q, c) in enumerate(rows):
            if q >= r:
                Gr[:, i, :] = Lam[(q, r)][:, c, :]
        Gl.append(Gr)
    D = len(rows)
    Sigma = np.zeros((S, D, D))
    Sigma[:, np.arange(D), np.arange(D)] = R[:, rq, rc]
    for r in range(qf + 1):
        Sigma += np.einsum("sia,sa,sja->sij", Gl[r], P.tau[:, r] ** 2, Gl[r])
    y = bv.z[rq, rc][None, :] - P.m[:, rq, rc] - mu[:, rq, rc]
    L = np.linalg.cholesky(Sigma)
    rt = _solve_lower(L, y[:, :, None])[:, :, 0]                  # (S, D)
    logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
    ll0 = -0.5 * ((rt**2).sum(axis=1) + logdet + D * math.log(2 * math.pi))
    J = [_solve_lower(L, Gl[r]) for r in range(qf + 1)]            # (S, D, d) each
    crack_ll = _crack_evidence(model, bv, qf)
    hyps = _hypotheses(model, qf, unexplained_rate)
    logml = np.empty((len(hyps), S))
    shift_sign = np.zeros((len(hyps), d))
    for h, hy in enumerate(hyps):
        extra = 0.0
        if hy.chars:
            cols = list(hy.chars)
            scale = np.maximum(P.tauf[:, hy.seg][:, cols], min_fault_sd)          # (S, m)
            W = J[hy.seg][:, :, cols] * scale[:, None, :]                          # (S, D, m)
            C = np.eye(len(cols)) + np.einsum("sdi,sdj->sij", W, W)
            b = np.einsum("sdi,sd->si", W, rt)
            Ci = np.linalg.inv(C)
            mean = np.einsum("sij,sj->si", Ci, b)
            _, ldC = np.linalg.slogdet(C)
            lbf = 0.5 * np.einsum("si,si->s", b, mean) - 0.5 * ldC
            sd = np.sqrt(np.diagonal(Ci, axis1=1, axis2=2))
            sg = np.array(hy.signs, dtype=float)
            signed = sg != 0
            if signed.any():
                from scipy.special import log_ndtr
                lbf = lbf + (log_ndtr(sg[signed] * mean[:, signed] / sd[:, signed]).sum(axis=1)
                             + signed.sum() * math.log(2.0))
            extra = lbf
            shift_sign[h, cols] = np.sign(np.average(mean * scale, axis=0))
        logml[h] = ll0 + extra + crack_ll[0] + (crack_ll[1].get(hy.seg, 0.0) if hy.crack else 0.0)
    # the null: no shift at all
    null = ll0 + crack_ll[0] + sum(math.log1p(-math.exp(hy.log_prior)) for hy in hyps)
    lm = _logmeanexp(logml, axis=1) + np.array([hy.log_prior for hy in hyps])
    ln = _logmeanexp(null[None], axis=1)[0]
    top_lm = lm.max()
    w = np.exp(lm - top_lm)
    post = w / w.sum()
    p_dev = 1.0 / (1.0 + math.exp(ln - (top_lm + math.log(w.sum()))))
    order = np.argsort(-post)
    if top is not None:
        order = order[:top]
    fc = None
    causes = []
    for h in order:
        hy = hyps[h]
        if fc is None:
            fc = _final_outlook(model, bv, seed)
        causes.append(Cause(hy.step, hy.cause, hy.kind, float(post[h]),
                            _path(model, bv, hy, shift_sign[h], qf, fc)))
    return RootCause(bv.batch_id, p.inspections[qf].step, bv.first_flag is not None, tuple(causes),
                     float(p_dev), bool(reasons), tuple(reasons))


def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve ``L X = B`` for batched lower-triangular ``L``."""
    from scipy.linalg import solve_triangular

    return np.stack([solve_triangular(L[s], B[s], lower=True, check_finite=False) for s in range(len(L))])


def _logmeanexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).mean(axis=axis, keepdims=True))).squeeze(axis)


def _crack_evidence(model, bv: BatchView, qf: int) -> tuple[float, dict[int, float]]:
    """Log-likelihood of the crack readings up to inspection ``qf``.

    Returns the log-likelihood with no crack cause (background cracking of
    about one bar in a thousand per stretch between crack gauges), and for a
    crack cause in segment ``r`` (key) the log-likelihood with the new cracks of
    the stretch covering ``r`` drawn from the fitted beta-binomial instead.
    """
    cm = model.crack_
    if cm.char is None:
        return 0.0, {}
    p = model.graph_.process
    ci = p.char_index[cm.char]
    from scipy.special import betaln, gammaln

    bg = 1e-3
    ll0 = 0.0
    delta: dict[int, float] = {}
    prev_k = 0
    prev_step = 0
    for q in range(qf + 1):
        step = p.inspections[q].step
        if not np.isfinite(bv.mean[q, ci]) or step not in cm.steps:
            continue
        n = int(bv.count[q, ci])
        k = int(round(bv.mean[q, ci] * n))
        new = max(k - prev_k, 0)
        risk = max(n - prev_k, new)
        i = list(cm.steps).index(step)
        lc = gammaln(risk + 1) - gammaln(new + 1) - gammaln(risk - new + 1)
        l0 = lc + new * math.log(bg) + (risk - new) * math.log1p(-bg)
        l1 = lc + betaln(new + cm.alpha[i], risk - new + cm.beta[i]) - betaln(cm.alpha[i], cm.beta[i])
        ll0 += l0
        for r, ins in enumerate(p.inspections):
            if prev_step < ins.step <= step:
                delta[r] = l1 - l0
        prev_k, prev_step = k, step
    return ll0, delta


@dataclass
class _Outlook:
    p_in_band: dict
    mean: dict


def _final_outlook(model: CausalModel, bv: BatchView, seed: int) -> _Outlook:
    pr_ = _forecast(model, bv, 200, 2, seed)
    p, g, std = model.graph_.process, model.graph_, model.std_
    from scipy.stats import norm

    lo_b, hi_b = p.final_bands()
    x = pr_.base[:, None, :] + std.scale * pr_.X0
    out, mean = {}, {}
    for c, name in enumerate(g.modeled):
        if not pr_.use[c]:
            continue
        ci = p.char_index[name]
        sd = np.maximum(pr_.sbar[:, None, c], 1e-300)
        out[name] = float((norm.cdf((hi_b[ci] - x[:, :, c]) / sd) - norm.cdf((lo_b[ci] - x[:, :, c]) / sd)).mean())
        mean[name] = float(x[:, :, c].mean())
    for name in g.crack:
        out[name] = float(1.0 - pr_.crack_frac.mean())
        mean[name] = float(pr_.crack_frac.mean())
    return _Outlook(out, mean)


def _path(model: CausalModel, bv: BatchView, hy: _Hyp, sign: np.ndarray, qf: int, fc: _Outlook) -> str:
    p, g = model.graph_.process, model.graph_
    segs = g.segments()
    insp = p.inspections[qf]
    moved = [(g.modeled[c], sign[c]) for c in hy.chars]
    verb = {1.0: "raised", -1.0: "lowered", 0.0: "shifted"}
    if hy.kind == "fault":
        by_verb: dict[str, list[str]] = {}
        for name, sg in moved:
            by_verb.setdefault(verb[float(sg)], []).append(name)
        if hy.crack:
            by_verb.setdefault("cracked", []).append("bars")
        what = "; ".join(f"{v} {' and '.join(n)}" for v, n in by_verb.items()) or "acted"
        head = f"{g.describe_step(hy.step)}: {hy.cause} {what}"
    else:
        seg = segs[hy.seg]
        acting = [f"{k} {p.step(k).name}" for k in seg.steps if (k, hy.cause) in g.acts]
        direction = {1.0: "rose", -1.0: "fell", 0.0: "deviated"}[float(sign[hy.chars[0]])] if hy.chars else "appeared"
        head = (f"{hy.cause} {direction} between step {seg.start} and step {seg.end} (steps acting on it: "
                f"{', '.join(acting)}); no catalogue fault explains it")
    lo, hi = p.gate_bands(insp.step)
    bad = []
    for ci, ch in enumerate(p.characteristics):
        v = bv.mean[qf, ci]
        if np.isfinite(v) and np.isfinite(lo[ci]) and (v < lo[ci] or v > hi[ci]):
            bad.append(f"{ch.name} {v:.4g} {ch.unit} outside {lo[ci]:.4g}..{hi[ci]:.4g}")
    flag = (f"flagged at step {insp.step} {insp_name(p, insp.step)} ({'; '.join(bad)})" if bad
            else f"seen at step {insp.step} {insp_name(p, insp.step)} (no gate failed)")
    # characteristics downstream of the cause's shift that are predicted out of their final band
    reach = set(hy.chars)
    for q in range(hy.seg + 1, len(segs)):
        reach = {c for c in range(len(g.modeled)) if segs[q].carry[c, list(reach)].any()} if reach else set()
    names = {g.modeled[c] for c in reach} | (set(g.crack) if hy.crack else set())
    level = p.acceptance_level
    outs = [f"{n} (expected {100 * fc.p_in_band[n]:.0f}% of bars inside)" for n in
            sorted(names, key=lambda n: p.char_index[n]) if n in fc.p_in_band and fc.p_in_band[n] < level]
    tail = ("out of final band under the nominal plan: " + ", ".join(outs)) if outs else \
        "final bands expected to hold under the nominal plan"
    return f"{head} -> {flag} -> {tail}"


def insp_name(p, step: int) -> str:
    return p.step(step).name
