"""The state query: what the batch's hidden characteristics are now
(:func:`state`, :func:`state_draws`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recovery.causal import _filter
from recovery.causal.queries._batch import (HDI_PROB, _batch_out_of_range, _crack_state, _draws,
                                           _filter_batch, _Filtered, _plan_effective, _sample_components, hdi,
                                           view)

if TYPE_CHECKING:  # the model imports the queries, never the other way round at run time
    from recovery.causal.model import CausalModel

__all__ = ["Estimate", "StateEstimate", "StateDraws", "state", "state_draws"]


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

