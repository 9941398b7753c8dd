"""The predict queries: the final characteristics and P(accept) under lever plans
for the steps still to come (:func:`predict`, :func:`predict_many`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recovery.causal import _filter
from recovery.causal.layout import Params
from recovery.causal.queries._batch import (HDI_PROB, BatchView, _as_plan, _batch_out_of_range, _crack_state,
                                           _draws, _filter_batch, _Filtered, _plan_effective, _plan_out_of_range,
                                           _sample_components, _transition, hdi, view)
from recovery.causal.queries.state import Estimate

if TYPE_CHECKING:  # the model imports the queries, never the other way round at run time
    from recovery.causal.model import CausalModel

__all__ = ["Prediction", "PlanPredictions", "predict", "predict_many"]


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
        noise = noise + _future_faults(model, P, q, samples_per_draw, rng)
        if P.mix is not None:   # along the segment's within-step edges
            noise = np.einsum("sab,skb->ska", P.mix[:, q], noise)
        X = X + np.einsum("sab,skb->ska", M, noise)
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
    need = p.bars_needed
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
    for i, v in model.held_levers.items():
        plans[:, i] = v
    past = ~p.free_levers(bv.step)
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

