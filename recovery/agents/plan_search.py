"""Bayesian-optimisation planner: Optuna over a few levers, candidates in batches.

The planner is independent of where plan values come from: it takes an
``objective(plans) -> (value, p_accept, score)`` that scores a batch of
candidate plans at once. ``value`` is expected money and decides what is
returned; ``score`` ranks candidates during the search (value plus a smooth
term, such as the expected share of bars inside each band, so the search
has a slope to climb while no candidate is accepted yet). The planner agent
scores by simulator rollouts from posterior draws of the batch's state with
common random numbers (``recovery.agents.rollouts``); tests also use toy
objectives. Following the measured costs in ANCHORS.md it:

1. screens every lever still ahead one at a time on a small grid (one batched
   call), then again on top of the best plan so far for a few greedy rounds
   (levers that only help together), and keeps the few that help most: the
   plan is parametrised in few dimensions;
2. runs an Optuna study (CMA-ES with margin, which handles integer levers)
   with ask/tell in batches, warm-started with the previous plan and the best
   screened plan (``enqueue_trial``);
3. prunes: resets each moved lever to nominal when that costs less than
   ``prune_tol`` of expected value, so small, few interventions win ties.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from simulators.definition import Process

__all__ = ["PlannerConfig", "PlanResult", "optimise_plan"]

Objective = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PlannerConfig:
    """Budget and habits of the planner.

    Attributes
    ----------
    n_trials : int
        Optuna trials after screening.
    batch_size : int
        Candidates asked for and scored together (CMA-ES population size).
    screen_grid : int
        Values per lever in the one-at-a-time screen.
    max_levers : int
        Levers the study may move (the most useful ones from the screen).
    screen_rounds : int
        Greedy screening rounds: each screens the remaining levers on top of
        the best plan so far (1: one-at-a-time from the start plan only).
    prune_tol : float
        Expected value (currency) the planner gives up to move one lever fewer.
    sampler : str
        ``"cmaes"`` or ``"tpe"``.
    """

    n_trials: int = 96
    batch_size: int = 16
    screen_grid: int = 7
    max_levers: int = 5
    screen_rounds: int = 3
    prune_tol: float = 20.0
    sampler: str = "cmaes"


@dataclass(frozen=True)
class PlanResult:
    """The planner's answer.

    ``moved`` is how far the plan moved from the start plan, as the mean of
    ``|new - old| / (high - low)`` over the levers still ahead (0: unchanged).
    """

    plan: np.ndarray
    value: float
    p_accept: float
    start_value: float
    moved: float
    levers_searched: tuple[str, ...]
    n_evaluations: int
    seconds: float
    extra: dict = field(default_factory=dict)


def _snap(process: Process, plans: np.ndarray) -> np.ndarray:
    lo, hi = process.lever_bounds()
    ints = np.array([lv.integer for lv in process.levers])
    plans = np.clip(plans, lo, hi)
    return np.where(ints, np.clip(np.round(plans), np.ceil(lo - 1e-9), np.floor(hi + 1e-9)), plans)


def optimise_plan(process: Process, after_step: int, objective: Objective, *,
                  start: np.ndarray | None = None, seed: int = 0,
                  config: PlannerConfig = PlannerConfig()) -> PlanResult:
    """Search the plan for the levers after ``after_step`` that maximises expected value.

    Parameters
    ----------
    process : Process
    after_step : int
        Last completed step; levers at or before it keep their ``start`` values.
    objective : callable
        ``objective(plans (n, n_levers)) -> (value (n,), p_accept (n,), score (n,))``.
    start : ndarray (n_levers,), optional
        Current plan (warm start); default nominal.
    seed : int
    config : PlannerConfig

    Returns
    -------
    PlanResult

    Examples
    --------
    >>> from simulators import load_process
    >>> p = load_process("small")
    >>> def obj(plans):  # prefer 60 um of extra grinding, nothing else
    ...     v = -np.abs(plans[:, p.lever_index["grinding_allowance"]] - 60.0)
    ...     return v, np.ones(len(plans)), v
    >>> r = optimise_plan(p, 6, obj, seed=1)
    >>> bool(abs(r.plan[p.lever_index["grinding_allowance"]] - 60.0) < 5.0)
    True
    """
    t0 = time.perf_counter()
    lo, hi = process.lever_bounds()
    nom = process.nominal_plan()
    base = nom.copy() if start is None else np.asarray(start, dtype=np.float64).copy()
    free = np.flatnonzero(process.free_levers(after_step))
    sc = _Scorer(process, objective)
    lead, keep, start_value = _screen(process, sc, base, free, config)
    if keep and config.n_trials > 0:
        _study(process, sc, lead, base, keep, seed, config)
    plan, val, acc = _prune(process, sc, free, config)
    span = np.where(hi > lo, hi - lo, 1.0)
    moved = float(np.mean(np.abs(plan[free] - base[free]) / span[free])) if len(free) else 0.0
    return PlanResult(plan, val, acc, start_value, moved,
                      tuple(process.levers[j].name for j in keep), sc.n_evals, time.perf_counter() - t0)


class _Scorer:
    """The objective on snapped plans, counting evaluations and keeping every plan seen."""

    def __init__(self, process: Process, objective: Objective):
        self.process, self.objective = process, objective
        self.n_evals = 0
        #: (plan, value, p_accept, score) of every plan scored during the search
        self.seen: list[tuple[np.ndarray, float, float, float]] = []

    def __call__(self, plans: np.ndarray, *, keep: bool = True):
        plans = _snap(self.process, np.atleast_2d(plans))
        v, a, s = self.objective(plans)
        self.n_evals += len(plans)
        v, a, s = np.asarray(v, float), np.asarray(a, float), np.asarray(s, float)
        if keep:
            self.seen.extend((plans[i].copy(), float(v[i]), float(a[i]), float(s[i])) for i in range(len(v)))
        return plans, v, a, s


def _one_lever_moves(process: Process, around: np.ndarray, levers, config: PlannerConfig):
    """Candidates moving one lever of ``levers`` at a time over its grid, and which lever each moves."""
    lo, hi = process.lever_bounds()
    cands, owner = [], []
    for j in levers:
        for g in np.linspace(lo[j], hi[j], config.screen_grid):
            c = around.copy()
            c[j] = g
            cands.append(c)
            owner.append(j)
    return cands, owner


def _screen(process: Process, sc: _Scorer, base: np.ndarray, free: np.ndarray, config: PlannerConfig):
    """Step 1: screen the free levers one at a time, then greedily on top of the lead plan.

    Returns the lead plan, the levers the study searches over, and the start plan's value.
    """
    nom = process.nominal_plan()
    cands, owner = _one_lever_moves(process, base, free, config)
    cands = [base, np.where(np.isin(np.arange(len(nom)), free), nom, base)] + cands
    owner = np.array([-1, -1] + owner)
    plans, v, a, s = sc(np.array(cands))
    start_value = float(v[0])
    # best by value (ties: score) is what may be returned; the search follows score
    best_i = int(np.argmax(s))
    lead, lead_sc = plans[best_i].copy(), float(s[best_i])
    gain = {j: float(s[owner == j].max() - max(s[0], s[1])) for j in free}
    # Greedy rounds: screen the other levers again on top of the lead plan, so
    # levers that only help together (strength first, then straightness) are found.
    chosen = [int(owner[best_i])] if owner[best_i] >= 0 else []
    for _ in range(config.screen_rounds - 1):
        if not chosen:
            break
        cands2, owner2 = _one_lever_moves(process, lead, [j for j in free if j not in chosen], config)
        if not cands2:
            break
        plans2, _, _, s2 = sc(np.array(cands2))
        i2 = int(np.argmax(s2))
        if s2[i2] <= lead_sc + 1e-9:
            break
        lead, lead_sc = plans2[i2].copy(), float(s2[i2])
        chosen.append(owner2[i2])
    # Keep the greedy levers, then those whose best single move helps most
    # (plus any the start plan moved).
    keep = list(chosen)
    keep += [j for j in sorted(gain, key=gain.get, reverse=True) if gain[j] > 0 and j not in keep]
    keep = keep[: max(config.max_levers, len(chosen))]
    keep += [j for j in free if abs(base[j] - nom[j]) > 1e-12 and j not in keep]
    return lead, sorted(keep), start_value


def _study(process: Process, sc: _Scorer, lead: np.ndarray, base: np.ndarray, keep: list[int], seed: int,
           config: PlannerConfig) -> None:
    """Step 2: an Optuna study over the kept levers, asked and told in batches, warm-started."""
    import optuna

    lo, hi = process.lever_bounds()
    optuna.logging.set_verbosity(logging.WARNING)
    names = [process.levers[j].name for j in keep]
    dists = {}
    for j, n in zip(keep, names):
        lv = process.levers[j]
        if lv.integer:
            dists[n] = optuna.distributions.IntDistribution(int(np.ceil(lo[j])), int(np.floor(hi[j])))
        else:
            dists[n] = optuna.distributions.FloatDistribution(float(lo[j]), float(hi[j]))

    def params(plan: np.ndarray) -> dict:
        return {n: (int(round(plan[j])) if process.levers[j].integer else float(plan[j]))
                for j, n in zip(keep, names)}

    if config.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=config.batch_size)
    else:
        import warnings
        with warnings.catch_warnings():  # with_margin is flagged experimental
            warnings.simplefilter("ignore")
            sampler = optuna.samplers.CmaEsSampler(seed=seed, popsize=config.batch_size,
                                                   with_margin=True, warn_independent_sampling=False)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(params(lead))
    study.enqueue_trial(params(base))
    done = 0
    while done < config.n_trials:
        k = min(config.batch_size, config.n_trials - done)
        trials = [study.ask(dists) for _ in range(k)]
        batch = np.tile(lead, (k, 1))
        for i, tr in enumerate(trials):
            for j, n in zip(keep, names):
                batch[i, j] = tr.params[n]
        _, _, _, s = sc(batch)
        for tr, val in zip(trials, s):
            study.tell(tr, float(val))
        done += k


def _prune(process: Process, sc: _Scorer, free: np.ndarray, config: PlannerConfig):
    """Step 3: the best plan seen, with each moved lever reset to nominal when that costs
    less than ``prune_tol`` of expected value (fewest interventions win ties)."""
    nom = process.nominal_plan()
    plan, val, acc, _ = max(sc.seen, key=lambda t: (t[1], t[3]))
    moved_levers = [j for j in free if abs(plan[j] - nom[j]) > 1e-12]
    for j in sorted(moved_levers, key=lambda j: process.levers[j].cost_per_use, reverse=True):
        trial = plan.copy()
        trial[j] = nom[j]
        _, tv, ta, _ = sc(trial, keep=False)
        if tv[0] >= val - config.prune_tol:
            plan, val, acc = trial, float(tv[0]), float(ta[0])
    return plan, val, acc
