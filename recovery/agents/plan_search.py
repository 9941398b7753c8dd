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
    import optuna

    t0 = time.perf_counter()
    lo, hi = process.lever_bounds()
    nom = process.nominal_plan()
    base = nom.copy() if start is None else np.asarray(start, dtype=np.float64).copy()
    free = np.flatnonzero(process.free_levers(after_step))
    n_evals = 0

    def score(plans: np.ndarray):
        nonlocal n_evals
        plans = _snap(process, np.atleast_2d(plans))
        v, a, sc = objective(plans)
        n_evals += len(plans)
        return plans, np.asarray(v, float), np.asarray(a, float), np.asarray(sc, float)

    cands = [base, np.where(np.isin(np.arange(len(nom)), free), nom, base)]
    owner = [-1, -1]
    for j in free:
        for g in np.linspace(lo[j], hi[j], config.screen_grid):
            c = base.copy()
            c[j] = g
            cands.append(c)
            owner.append(j)
    plans, v, a, sc = score(np.array(cands))
    start_value = float(v[0])
    owner = np.array(owner)
    # best by value (ties: score) is what may be returned; the search follows score
    seen = [(plans[i].copy(), float(v[i]), float(a[i]), float(sc[i])) for i in range(len(v))]
    best_i = int(np.argmax(sc))
    lead, lead_sc = plans[best_i].copy(), float(sc[best_i])
    gain = {j: float(sc[owner == j].max() - max(sc[0], sc[1])) for j in free}
    # Greedy rounds: screen the other levers again on top of the lead plan, so
    # levers that only help together (strength first, then straightness) are found.
    chosen = [int(owner[best_i])] if owner[best_i] >= 0 else []
    for _ in range(config.screen_rounds - 1):
        if not chosen:
            break
        cands, owner2 = [], []
        for j in free:
            if j in chosen:
                continue
            for g in np.linspace(lo[j], hi[j], config.screen_grid):
                c = lead.copy()
                c[j] = g
                cands.append(c)
                owner2.append(j)
        if not cands:
            break
        plans2, v2, a2, sc2 = score(np.array(cands))
        seen.extend((plans2[i].copy(), float(v2[i]), float(a2[i]), float(sc2[i])) for i in range(len(v2)))
        i2 = int(np.argmax(sc2))
        if sc2[i2] <= lead_sc + 1e-9:
            break
        lead, lead_sc = plans2[i2].copy(), float(sc2[i2])
        chosen.append(owner2[i2])
    # Keep the greedy levers, then those whose best single move helps most
    # (plus any the start plan moved).
    keep = list(chosen)
    keep += [j for j in sorted(gain, key=gain.get, reverse=True) if gain[j] > 0 and j not in keep]
    keep = keep[: max(config.max_levers, len(chosen))]
    keep += [j for j in free if abs(base[j] - nom[j]) > 1e-12 and j not in keep]
    keep = sorted(keep)

    if keep and config.n_trials > 0:
        optuna.logging.set_verbosity(logging.WARNING)
        names = [process.levers[j].name for j in keep]
        dists = {}
        for j, n in zip(keep, names):
            lv = process.levers[j]
            if lv.integer:
                dists[n] = optuna.distributions.IntDistribution(int(np.ceil(lo[j])), int(np.floor(hi[j])))
            else:
                dists[n] = optuna.distributions.FloatDistribution(float(lo[j]), float(hi[j]))
        x0 = {n: (int(round(lead[j])) if process.levers[j].integer else float(lead[j]))
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
        study.enqueue_trial(x0)
        study.enqueue_trial({n: (int(round(base[j])) if process.levers[j].integer else float(base[j]))
                             for j, n in zip(keep, names)})
        done = 0
        while done < config.n_trials:
            k = min(config.batch_size, config.n_trials - done)
            trials = [study.ask(dists) for _ in range(k)]
            batch = np.tile(lead, (k, 1))
            for i, tr in enumerate(trials):
                for j, n in zip(keep, names):
                    batch[i, j] = tr.params[n]
            plans, v, a, sc = score(batch)
            for tr, val in zip(trials, sc):
                study.tell(tr, float(val))
            seen.extend((plans[i].copy(), float(v[i]), float(a[i]), float(sc[i])) for i in range(k))
            done += k

    # Prune: fewest interventions within prune_tol of the best value.
    plan, val, acc, _ = max(seen, key=lambda t: (t[1], t[3]))
    moved_levers = [j for j in free if abs(plan[j] - nom[j]) > 1e-12]
    for j in sorted(moved_levers, key=lambda j: process.levers[j].cost_per_use, reverse=True):
        trial = plan.copy()
        trial[j] = nom[j]
        _, tv, ta, _ = score(trial)
        if tv[0] >= val - config.prune_tol:
            plan, val, acc = trial, float(tv[0]), float(ta[0])
    span = np.where(hi > lo, hi - lo, 1.0)
    moved = float(np.mean(np.abs(plan[free] - base[free]) / span[free])) if len(free) else 0.0
    return PlanResult(plan, val, acc, start_value, moved,
                      tuple(process.levers[j].name for j in keep), n_evals, time.perf_counter() - t0)
