"""The fit report (:class:`FitReport`): convergence, expert priors the data
contradict, expert edges the data do or do not support, and notes."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from recovery.causal.components import BarSpread
from recovery.causal.config import FitConfig
from recovery.causal.graph import CausalGraph
from recovery.causal.layout import Layout
from recovery.causal.posterior import theta_draws
from recovery.causal.summaries import Summaries

__all__ = ["FitReport", "build_report"]


@dataclass(frozen=True)
class FitReport:
    """What ``recovery fit`` prints.

    Attributes
    ----------
    method, sampler : str
    n_batches, n_parameters : int
    excluded_batches : int
        Batches in inspection patterns too rare to fit (named in ``notes``).
    compile_seconds, sample_seconds : float
    rhat_max, ess_bulk_min, ess_tail_min : float or None
        NUTS only.
    divergences : int or None
    worst : tuple of (name, rhat, ess_bulk)
        The parameters with the highest R-hat.
    expert : tuple of str
        Expert edits applied.
    conflicts : tuple of str
        Expert priors the data contradict (not overridden: the prior stays).
    notes : tuple of str
    """

    method: str
    sampler: str
    n_batches: int
    n_parameters: int
    excluded_batches: int
    compile_seconds: float
    sample_seconds: float
    rhat_max: float | None = None
    ess_bulk_min: float | None = None
    ess_tail_min: float | None = None
    divergences: int | None = None
    worst: tuple = ()
    expert: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        if self.rhat_max is None:
            return True
        return self.rhat_max < 1.1 and (self.divergences or 0) == 0

    def lines(self) -> list[str]:
        out = [f"method       {self.method} ({self.sampler})",
               f"batches      {self.n_batches}" + (f" ({self.excluded_batches} excluded: inspection "
                                                    f"pattern seen fewer than 3 times)"
                                                    if self.excluded_batches else ""),
               f"parameters   {self.n_parameters}",
               f"time         compile {self.compile_seconds:.1f} s, sampling {self.sample_seconds:.1f} s"]
        if self.rhat_max is not None:
            out += [f"R-hat        max {self.rhat_max:.3f}" + ("" if self.rhat_max < 1.1 else
                                                              "  (above 1.1: run longer)"),
                    f"ESS          bulk min {self.ess_bulk_min:.0f}, tail min {self.ess_tail_min:.0f}",
                    f"divergences  {self.divergences}"]
            if self.worst:
                out.append("worst mixing:")
                out += [f"  {n:50s} R-hat {r:.3f}  ESS {e:.0f}" for n, r, e in self.worst]
        for x in self.expert:
            out.append(f"expert       {x}")
        for x in self.conflicts:
            out.append(f"CONFLICT     {x}")
        for x in self.notes:
            out.append(f"note         {x}")
        return out


def build_report(idata, layout: Layout, graph: CausalGraph, spread: BarSpread, summaries: Summaries,
                 cfg: FitConfig, sampler: str, n_batches: int, excluded: int, t_compile: float,
                 t_sample: float, notes: list[str]) -> FitReport:
    """The report of a fit from its posterior and what it was fitted to.

    ``n_batches`` counts the batches of this fit (an update's new ones only),
    ``summaries`` every batch seen; ``notes`` are the fit's own and are extended.
    """
    import arviz as az

    post = idata.posterior
    rhat_max = ess_b = ess_t = div = None
    worst: tuple = ()
    if cfg.method == "nuts":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rh = np.asarray(az.rhat(post, var_names=["theta"])["theta"].values)
            eb = np.asarray(az.ess(post, var_names=["theta"], method="bulk")["theta"].values)
            et = np.asarray(az.ess(post, var_names=["theta"], method="tail")["theta"].values)
        rh = np.nan_to_num(rh, nan=1.0)
        rhat_max, ess_b, ess_t = float(rh.max()), float(np.nanmin(eb)), float(np.nanmin(et))
        ss = idata.sample_stats
        key = "diverging" if "diverging" in ss else None
        div = int(np.asarray(ss[key]).sum()) if key else 0
        order = np.argsort(-rh)[:5]
        worst = tuple((layout.names[i], float(rh[i]), float(eb[i])) for i in order)
    theta = theta_draws(idata, robust=False)
    robust = theta_draws(idata)
    widen = robust.var(axis=0) / np.maximum(theta.var(axis=0), 1e-300)
    conflicts = []
    for k, to_phys, label in layout.expert:
        # Data-only estimate by subtracting prior precision from posterior precision
        # (Gaussian approximation, on the sampler's draws; the robust adjustment then
        # widens it as it widened the posterior); a z above 3 means the data disagree.
        pm_, pv = theta[:, k].mean(), theta[:, k].var()
        m0, v0 = layout.prior_mu[k], layout.prior_sd[k] ** 2
        lik_prec = (1.0 / max(pv, 1e-12) - 1.0 / v0) / max(widen[k], 1.0)
        if lik_prec <= 1e-12:
            continue
        lik_mean = (pm_ / pv - m0 / v0) / (lik_prec * max(widen[k], 1.0))
        z = abs(lik_mean - m0) / math.sqrt(v0 + 1.0 / lik_prec)
        if z > 3:
            conflicts.append(f"{label}: the data say {lik_mean * to_phys:.4g} +- "
                             f"{math.sqrt(1 / lik_prec) * abs(to_phys):.2g}, the expert prior "
                             f"{m0 * to_phys:.4g} +- {math.sqrt(v0) * abs(to_phys):.2g} "
                             f"(z = {z:.1f}); the prior is kept - check it")
    expert_added = [e for e in graph.edges if e.origin == "expert" and e.kind != "carry"]
    for e in expert_added:
        info = _edge_support(graph, layout, robust, e)
        if info:
            notes.append(info)
    if excluded:
        notes.append(f"{excluded} batches were not used: their inspection pattern (which gauges "
                     "have readings) occurs fewer than 3 times")
    notes.extend(layout.expert_notes)
    if spread.trimmed:
        notes.append(f"{spread.trimmed} batch readings with a fault-sized spread left out of "
                     "the bar-to-bar spread estimate (chi-square trim; see docs/causal-model.md)")
    if summaries.ignored_rows:
        notes.append(f"{summaries.ignored_rows} measurement rows at non-inspection steps ignored")
    return FitReport(cfg.method, sampler, n_batches, layout.size, excluded, t_compile, t_sample,
                     rhat_max, ess_b, ess_t, div, worst, tuple(graph.log), tuple(conflicts),
                     tuple(notes))


def _edge_support(g: CausalGraph, layout: Layout, theta: np.ndarray, edge) -> str | None:
    """Whether the data support an edge an engineer added (it stays either way),
    from the posterior draws ``theta (S, P)``."""
    q = g.segment_of_step(edge.step)
    c = g.modeled_index.get(edge.target)
    if c is None:
        return None
    if edge.kind == "lever":
        j = g.process.lever_index[edge.source]
        hit = np.flatnonzero((layout.lever_q == q) & (layout.lever_c == c) & (layout.lever_f == j))
        idx = layout.lever_i[hit]
    elif edge.kind == "within":
        c2 = g.modeled_index.get(edge.source)
        hit = np.flatnonzero((layout.within_q == q) & (layout.within_c == c) & (layout.within_c2 == c2))
        idx = np.asarray(layout.within_i)[hit]
    else:
        c2 = g.modeled_index.get(edge.source)
        hit = np.flatnonzero((layout.carry_q == q) & (layout.carry_c == c) & (layout.carry_c2 == c2))
        idx = layout.carry_i[hit]
    if not len(idx):
        return None
    x = theta[:, idx[0]]
    lo, hi = np.quantile(x, [0.03, 0.97])
    verdict = "supported by the data" if lo > 0 or hi < 0 else "not distinguishable from zero in the data (kept)"
    return f"expert edge {edge.source} -> {edge.target} at step {edge.step}: {verdict}"
