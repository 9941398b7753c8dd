"""Which extra measurement pays for one flagged batch now (``recovery measure``).

For the batch's current situation (the causal model's posterior over its state
at its last step, as :func:`recovery.recommend.recommend` builds it), every
candidate measurement that could be taken before the next lever acts is
valued by preposterior analysis (:mod:`recovery.voi.preposterior`):

- candidates: each characteristic, after the current step or after each later
  step before the first lever still to come, on ``n`` bars (the inspection's
  sample, twice that, every bar of the batch by default);
- ``S`` joint posterior draws of the batch's bars (``posterior_bars``, with the
  calibrated physics when the model folder has a calibration) are the states;
  for a later step they are run on to it with the simulator;
- the options are a small fixed set found once: continue with the current
  plan, do nothing (nominal levers ahead, when that differs), the planner's
  plan (the planner's search on the current posterior), a second plan searched
  on the draws where the planner's plan fails, and scrap. Re-planning after a
  reading re-chooses among these options with the planner's decision rule on
  the reweighted draws; a full plan search per simulated reading would not fit
  the latency budget (hundreds of readings per candidate);
- every option is rolled out once from every draw with common random numbers,
  and the net value to come is ``batch_value`` if accepted, ``-scrap_cost`` if
  not, minus the levers still to pay; scrapping after step ``t`` saves the
  processing of the steps after ``t``.

EVSI = E[net value | measure, then decide] - E[net value | decide now], with a
94% interval from the Monte-Carlo standard error of the paired per-draw
differences (the readings and rollouts are the Monte-Carlo sample; the
posterior draws themselves are held fixed). The cost of a candidate is
``measurement_cost * n`` in the process file's currency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recovery.agents.base import Situation
from recovery.agents.rollouts import PosteriorBars, posterior_bars, rollout_objective
from recovery.voi.preposterior import decide, preposterior_value, reading_loglik, simulate_readings

__all__ = ["MeasureError", "MeasureConfig", "Candidate", "MeasureAnalysis", "measure", "measure_situation",
           "value_candidate", "candidate_steps", "flagged_at"]


class MeasureError(ValueError):
    """The batch cannot be given a measurement analysis (the message says why)."""


@dataclass(frozen=True)
class MeasureConfig:
    """Budget of the analysis.

    Attributes
    ----------
    n_states : int
        Posterior draws of the batch's state (each one reading and one rollout per option).
    n_search : int
        Draws the plan search scores each candidate plan on.
    samples : tuple of int, optional
        Bars per candidate; default: the latest inspection's sample, twice it, every bar.
    planner : str
        ``"default"`` or ``"tiny"``: the plan search's budget (``PlannerAgent``'s).
    alternative : bool
        Also search a second plan on the draws where the planner's plan fails.
    min_gain : float
        Currency an intervention must bring over continuing (``choose_action``'s rule).
    prob : float
        Coverage of the EVSI interval.
    revalue : int
        The best candidates valued again on an independent Monte-Carlo sample.
    confirm : bool
        Value the best candidate after the revaluation once more, on a third
        independent sample (:attr:`MeasureAnalysis.confirmed`): the value a
        decision to measure can rest on (see :func:`measure_situation`).
    """

    n_states: int = 384
    n_search: int = 64
    samples: tuple[int, ...] | None = None
    planner: str = "default"
    alternative: bool = True
    min_gain: float = 1.0
    prob: float = 0.94
    revalue: int = 3
    confirm: bool = False


TINY = MeasureConfig(n_states=96, n_search=16, planner="tiny", alternative=False)


@dataclass(frozen=True)
class Candidate:
    """One candidate measurement and its value (currency: the process file's)."""

    step: int
    characteristic: str
    sample: int
    evsi: float
    low: float
    high: float
    cost: float
    changes_decision: str | None
    p_change: float = 0.0

    @property
    def net(self) -> float:
        """EVSI minus cost."""
        return self.evsi - self.cost

    def to_dict(self) -> dict:
        return {"step": self.step, "characteristic": self.characteristic, "sample": self.sample,
                "evsi": self.evsi, "low": self.low, "high": self.high, "cost": self.cost,
                "changes_decision": self.changes_decision, "p_change": self.p_change}


@dataclass(frozen=True)
class MeasureAnalysis:
    """The ranked candidates for one batch. ``to_dict`` is the JSON contract.

    Attributes
    ----------
    batch_id : str
    step : int
        The batch's last completed step.
    decision_now : str
        ``continue``, ``intervene`` or ``scrap``: the decision without measuring.
    value_now : float
        Its expected net value to come (currency).
    candidates : list of Candidate
        Sorted by ``evsi - cost``, best first.
    options : list of dict
        The options re-chosen after each reading (label, kind, expected value now).
    currency : str
    n_states : int
    interval : str
        How ``low`` and ``high`` are made.
    latency_s : float
    """

    batch_id: str
    step: int
    decision_now: str
    value_now: float
    candidates: list
    options: list
    currency: str
    n_states: int
    interval: str
    latency_s: float = 0.0
    prepared: object = field(default=None, repr=False, compare=False)
    physics: str = "file"
    """``"calibrated"`` when draws and rollouts use the model folder's calibration, else ``"file"``."""
    confirmed: Candidate | None = None
    """With ``MeasureConfig.confirm``: the best candidate valued on a third independent sample."""

    def to_dict(self) -> dict:
        return {"batch_id": self.batch_id, "step": self.step, "decision_now": self.decision_now,
                "value_now": self.value_now, "currency": self.currency,
                "candidates": [c.to_dict() for c in self.candidates], "options": self.options,
                "n_states": self.n_states, "interval": self.interval, "physics": self.physics}


def flagged_at(process, history: pd.DataFrame) -> list[tuple[int, str]]:
    """``(step, characteristic)`` of every gauged sample mean outside its gate in the history."""
    m = history[history["kind"].astype(str) == "measurement"]
    out = []
    for step, g in m.groupby("step"):
        if int(step) not in process.inspection_steps:
            continue
        lo, hi = process.gate_bands(int(step))
        for name, mean in g.groupby(g["variable"].astype(str))["value"].mean().items():
            i = process.char_index.get(name)
            if i is not None and (mean < lo[i] or mean > hi[i]):   # NaN bands never compare
                out.append((int(step), name))
    return out


def candidate_steps(process, step: int) -> list[int]:
    """Steps after which a measurement still comes before the next lever acts.

    From ``step`` itself up to the step before the first lever still ahead, and
    before the next inspection (which gauges the batch anyway, and after which
    the plan is made again), or the step before the last one.
    """
    ahead = [lv.step for lv in process.levers if lv.step > step]
    ahead += [s for s in process.inspection_steps if s > step]
    stop = min(ahead + [process.n_steps])
    return list(range(step, max(stop, step + 1)))


@dataclass(frozen=True)
class _Prepared:
    """The options found once, and the draws and rollouts the decision now was made on.

    The agent updates these on a real reading (:mod:`recovery.voi.agent`).
    """

    bars: PosteriorBars          # draws of the batch at the situation's step
    plans: np.ndarray            # (n_plan_options, n_levers); scrap is the option after them
    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    values: np.ndarray           # (n_options, S) net value to come of each option on each draw
    now: int                     # the option decided now


def _net_values(sim, start_state, t, plans, free, n, seed, cond, params) -> np.ndarray:
    """Net value to come (currency) of each plan rolled out once from each draw after step ``t``."""
    p = sim.process
    eco = p.economics
    in_spec = sim.rollout(start_state, t, plans, n, seed, cond, params=params)
    acc = p.accepts(in_spec)
    to_come = np.array([float(p.lever_cost(np.where(free, pl, p.nominal_plan()))) for pl in plans])
    return np.where(acc, eco.batch_value, -eco.scrap_cost) - to_come[:, None]


def _describe_change(process, char: str, n: int, readings: np.ndarray, choice: np.ndarray, now: np.ndarray,
                     labels, binary: bool) -> str | None:
    """"if the mean X reads above v unit, A instead of B" from the simulated readings."""
    changed = choice != now
    if not changed.any():
        return None
    pairs, counts = np.unique(np.stack([choice[changed], now[changed]]), axis=1, return_counts=True)
    alt, base = (int(v) for v in pairs[:, np.argmax(counts)])
    y = readings.sum(axis=1) if binary else readings.mean(axis=1)
    target = (choice == alt) & (now == base)
    order = np.argsort(y, kind="stable")
    ys, ts = y[order], target[order].astype(np.float64)
    # threshold between sorted readings that best separates "alt" from the rest:
    # cut after k readings; "above" is right on alt above the cut and the rest below it
    k = np.arange(1, len(ys))
    hits = np.cumsum(ts)[:-1]                        # alt among the first k
    above = (ts.sum() - hits + (k - hits)) / len(ys)
    below = (hits + (len(ys) - k) - (ts.sum() - hits)) / len(ys)
    ok = ys[1:] > ys[:-1]                            # only cut between distinct readings
    if not ok.any():
        return None
    above, below = np.where(ok, above, -1.0), np.where(ok, below, -1.0)
    side = "above" if above.max() >= below.max() else "below"
    j = int(np.argmax(above if side == "above" else below))
    best = (None, 0.5 * (ys[j] + ys[j + 1]), side)
    unit = process.characteristic(char).unit
    if binary:
        what = f"the number of cracked bars among {n} reads {best[2]} {best[1]:.3g}"
    else:
        what = f"the mean {char} of {n} bars reads {best[2]} {best[1]:.4g} {unit}"
    return f"if {what}, {labels[alt]} instead of {labels[base]}"


def measure_situation(sit: Situation, model, *, seed: int = 0, config: MeasureConfig = MeasureConfig(),
                      posterior=None, steps: list[int] | None = None,
                      plan: np.ndarray | None = None) -> MeasureAnalysis:
    """Rank the candidate measurements for one batch's situation (see the module doc).

    The candidates are screened on one Monte-Carlo sample (draws, rollouts and
    readings); the best three are then valued again on an independent sample
    and ranked by that value. The best of some sixty noisy estimates is
    biased upwards (it is the best partly because its noise was favourable); a
    fresh estimate of the chosen few is not, but the best of those three is
    again chosen on its noise. A decision to measure (the ``planner+measure``
    agent) therefore rests on ``config.confirm``: the chosen candidate valued a
    third time, on a sample that played no part in choosing it.

    Parameters
    ----------
    sit : Situation
        The batch now (``recovery.recommend.batch_situation``).
    model : recovery.causal.model.CausalModel
        Fitted on the situation's process.
    seed : int
    config : MeasureConfig
    posterior : recovery.calibration.PhysicsPosterior, optional
        Calibrated physics for the draws and rollouts (default: the file's).
    steps : list of int, optional
        Candidate steps (default: :func:`candidate_steps`).
    plan : ndarray (n_levers,), optional
        The planner's own proposal (an intervention, full plan, physical units):
        the intervene option instead of the analysis's own plan search. A
        reading then re-chooses between what the planner would do and the
        other options, not between them and another search's plan.

    Returns
    -------
    MeasureAnalysis
    """
    from recovery.agents.planner_agent import PlannerAgent

    t0 = time.perf_counter()
    p = sit.process
    eco = p.economics
    s = sit.step
    planner = PlannerAgent(model, budget=config.planner, posterior=posterior)
    sim = planner.sim
    S = config.n_states
    steps = candidate_steps(p, s) if steps is None else list(steps)
    for t in steps:
        if not s <= t < p.n_steps:
            raise MeasureError(f"step {t}: candidates lie between the batch's step {s} and the last step")
    samples = _sample_sizes(p, s, config)

    def draws(k):
        """Sample ``k`` of posterior draws (0: screening and the options; 1: revaluation; 2: confirmation)."""
        key = [seed, 0xE5] if k == 1 else [seed, 0xE5, k]
        sd = seed if k == 0 else int(np.random.SeedSequence(key).generate_state(1)[0] % (2**31))
        return posterior_bars(sim, model, sit.history, S, seed=sd, params=planner.physics_draws(S, sd))

    bars = draws(0)
    plans_arr, labels, kinds = _options(sit, planner, bars, seed, config, plan)
    val = _Valuer(sit, sim, plans_arr, labels, kinds, config)

    # Every option on every draw, deciding now (after step s), common random numbers.
    _, V_s = val.values(bars, s, seed)
    k_now = int(decide(V_s.mean(axis=1), kinds, min_gain=config.min_gain))
    options = [{"label": lab, "kind": kd, "expected_value": float(e)}
               for lab, kd, e in zip(labels, kinds, V_s.mean(axis=1))]
    cands = _screen(val, bars, V_s, steps, samples, seed)
    # The best few again, on independent draws, rollouts and readings (see the docstring).
    top = [c for c in cands[: config.revalue] if c.p_change > 0]
    if top:
        fresh = draws(1)
        rseed = seed + 7_919
        at = {t: val.values(fresh, t, rseed) for t in sorted({c.step for c in top})}
        again = {id(c): val.value(*at[c.step], c.step, p.characteristic(c.characteristic), c.sample, rseed)
                 for c in top}
        cands = [again.get(id(c), c) for c in cands]
        cands.sort(key=lambda c: (-c.net, c.step, c.characteristic, c.sample))
    confirmed = None
    if config.confirm and cands and cands[0].p_change > 0:
        # The best of the revalued few is still the best partly by luck: its value as
        # the ground for acting on it comes from a sample that did not choose it.
        c = cands[0]
        rseed = seed + 2 * 7_919
        st, V = val.values(draws(2), c.step, rseed)
        confirmed = val.value(st, V, c.step, p.characteristic(c.characteristic), c.sample, rseed)
    pct = round(100 * config.prob)
    return MeasureAnalysis(
        batch_id=sit.batch_id, step=s, decision_now=kinds[k_now], value_now=float(V_s[k_now].mean()),
        candidates=cands, options=options, currency=eco.currency, n_states=S,
        interval=f"{pct}% normal interval of the Monte-Carlo mean (standard error of the paired "
                 f"per-draw differences over {S} posterior draws); the best {config.revalue} "
                 f"valued again on an independent sample",
        latency_s=time.perf_counter() - t0,
        prepared=_Prepared(bars, plans_arr, tuple(labels), tuple(kinds), V_s, k_now),
        physics="calibrated" if planner.calibrated else "file", confirmed=confirmed)


def value_candidate(analysis: MeasureAnalysis, sit: Situation, model, candidate: Candidate, *, seed: int,
                    config: MeasureConfig = MeasureConfig(), posterior=None) -> Candidate:
    """One candidate of an analysis valued again on a fresh Monte-Carlo sample.

    The same options as ``analysis`` (its ``prepared`` plans), new posterior
    draws, rollouts and readings from ``seed``. A value that neither chose the
    candidate nor decided to take it: an unbiased forecast of what taking it
    is worth, where the analysis's own figures are the ones the choice was
    made on (benchmarks/voi_batch.py).

    Parameters
    ----------
    analysis : MeasureAnalysis
        From :func:`measure_situation` on ``sit``.
    sit : Situation
    model : recovery.causal.model.CausalModel
    candidate : Candidate
    seed : int
        Use one that the analysis did not.
    config : MeasureConfig
        The analysis's (``n_states``, ``min_gain``, ``prob``).
    posterior : recovery.calibration.PhysicsPosterior, optional

    Returns
    -------
    Candidate
    """
    from recovery.agents.planner_agent import PlannerAgent

    prep = analysis.prepared
    planner = PlannerAgent(model, budget=config.planner, posterior=posterior)
    S = config.n_states
    bars = posterior_bars(planner.sim, model, sit.history, S, seed=seed, params=planner.physics_draws(S, seed))
    val = _Valuer(sit, planner.sim, prep.plans, list(prep.labels), list(prep.kinds), config)
    st, V = val.values(bars, candidate.step, seed)
    return val.value(st, V, candidate.step, sit.process.characteristic(candidate.characteristic),
                     candidate.sample, seed)


def _sample_sizes(p, s: int, config: MeasureConfig) -> tuple[int, ...]:
    """Candidate sample sizes (bars): the configured ones, or the last inspection's
    sample at or before step ``s``, twice that, and every bar of the batch."""
    bpb = p.bars_per_batch
    last_insp = max((ins for ins in p.inspections if ins.step <= s), key=lambda i: i.step, default=None)
    base_n = last_insp.sample if last_insp is not None else min(p.inspections[0].sample, bpb)
    samples = config.samples or tuple(sorted({min(base_n, bpb), min(2 * base_n, bpb), bpb}))
    for n in samples:
        if not 1 <= n <= bpb:
            raise MeasureError(f"sample {n}: must be between 1 and the {bpb} bars of a batch")
    return samples


def _options(sit: Situation, planner, bars: PosteriorBars, seed: int, config: MeasureConfig,
             given: np.ndarray | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """(plans, labels, kinds) of the options: continue, do nothing, the planner's plan
    (``given``, else the planner's search here) and the plan for the bad cases when they
    differ, then scrap (labels and kinds only)."""
    from recovery.agents.plan_search import optimise_plan

    p, s, sim, S = sit.process, sit.step, planner.sim, config.n_states
    free = sit.free
    current = sit.plan
    nothing = np.where(free, p.nominal_plan(), sit.plan)
    plans, labels, kinds = [current], ["continue"], ["continue"]
    if not np.allclose(nothing, current):
        plans.append(nothing)
        labels.append("do nothing (nominal levers)")
        kinds.append("continue")
    if free.any():
        # The planner's search on its usual budget of draws (the first n_search of the S).
        if given is not None:
            best = np.asarray(given, dtype=np.float64)
        else:
            sub = _take(bars, np.arange(min(config.n_search, S)))
            best = optimise_plan(p, s, rollout_objective(sim, sub, seed=seed), start=current, seed=seed,
                                 config=planner.config).plan
        if not any(np.allclose(best, q) for q in plans):
            plans.append(best)
            labels.append("intervene with the planner's plan")
            kinds.append("intervene")
        if config.alternative:
            v = _net_values(sim, bars.state, s, best[None], free, S, seed + 1, bars.conditions,
                            bars.params)[0]
            fails = np.flatnonzero(v < 0)
            if len(fails) >= 8 and len(fails) < S:
                sub = _take(bars, fails[: config.n_search])
                alt = optimise_plan(p, s, rollout_objective(sim, sub, seed=seed + 2), start=best,
                                    seed=seed + 2, config=planner.config)
                if not any(np.allclose(alt.plan, q) for q in plans):
                    plans.append(alt.plan)
                    labels.append("intervene with the plan for the bad cases")
                    kinds.append("intervene")
    labels.append("scrap")
    kinds.append("scrap")
    return np.stack(plans), labels, kinds


class _Valuer:
    """Values the options, and a reading before deciding, on a sample of draws."""

    def __init__(self, sit: Situation, sim, plans: np.ndarray, labels: list[str], kinds: list[str],
                 config: MeasureConfig):
        self.sit, self.sim, self.plans, self.labels, self.kinds = sit, sim, plans, labels, kinds
        self.config = config
        self.p, self.s, self.S = sit.process, sit.step, config.n_states

    def scrap_after(self, t: int) -> float:
        """Net value (currency) of scrapping after step ``t``."""
        eco = self.p.economics
        return -eco.scrap_cost + eco.processing_cost_per_step * (self.p.n_steps - t)

    def values(self, b: PosteriorBars, t: int, rseed: int) -> tuple[np.ndarray, np.ndarray]:
        """(bars after step t, net value of every option on every draw deciding after t)."""
        sim, s, S = self.sim, self.s, self.S
        st = b.state
        if t > s:
            # run the draws on to step t (no lever acts before it), then value the options from there
            st = b.state.copy()
            rng = np.random.default_rng(np.random.SeedSequence([rseed, t, 0x70]))
            cond = sim.sample_conditions(S, rng, time=np.repeat(b.conditions.time[:1], S), after_step=s)
            sim.run(st, s, t, self.sit.plan, cond, rng, params=b.params,
                    param_set=None if b.params is None else np.arange(S))
        V = np.vstack([_net_values(sim, st, t, self.plans, self.sit.free, S, rseed + 3 + t, b.conditions,
                                   b.params),
                       np.full((1, S), self.scrap_after(t))])
        return st, V

    def value(self, st: np.ndarray, V: np.ndarray, t: int, ch, n: int, rseed: int) -> Candidate:
        """The candidate: ``n`` bars of characteristic ``ch`` read after step ``t``."""
        p, S, config = self.p, self.S, self.config
        ci = p.char_index[ch.name]
        x = st.reshape(S, p.bars_per_batch, p.n_chars)[:, :, ci]
        binary = ch.role == "crack"
        rng = np.random.default_rng(np.random.SeedSequence([rseed, t, ci, n, 0x5E]))
        y = simulate_readings(x, n, 0.0 if binary else ch.gauge_sigma, rng)
        ll = reading_loglik(y, x, ch.gauge_sigma, binary=binary)
        # deciding now: the same rollouts, but scrapping now saves the steps up to t too
        before = V.copy()
        before[len(self.plans)] = self.scrap_after(self.s)
        r = preposterior_value(V, before, ll, self.kinds, min_gain=config.min_gain, prob=config.prob)
        return Candidate(t, ch.name, int(n), r.evsi, r.low, r.high, p.economics.measurement_cost * n,
                         _describe_change(p, ch.name, n, y, r.choice, r.now, self.labels, binary), r.p_change)


def _screen(val: _Valuer, bars: PosteriorBars, V_s: np.ndarray, steps: list[int], samples,
            seed: int) -> list[Candidate]:
    """Every candidate valued on the screening sample, best net value first."""
    p, s, S = val.p, val.s, val.S
    cands: list[Candidate] = []
    for t in steps:
        st, V_t = (bars.state, V_s) if t == s else val.values(bars, t, seed)
        x_all = st.reshape(S, p.bars_per_batch, p.n_chars)
        for ch in p.characteristics:
            x = x_all[:, :, p.char_index[ch.name]]
            # nothing made yet, or the same in every draw: no reading can tell draws apart
            if float(np.ptp(x.mean(axis=1))) <= 1e-12 * (1.0 + abs(float(x.mean()))):
                continue
            for n in samples:
                cands.append(val.value(st, V_t, t, ch, n, seed))
    cands.sort(key=lambda c: (-c.net, c.step, c.characteristic, c.sample))
    return cands


def _take(bars: PosteriorBars, idx) -> PosteriorBars:
    """The draws ``idx`` of ``bars`` (repeats allowed)."""
    p_n = bars.state.shape[0] // bars.n
    st = bars.state.reshape(bars.n, p_n, -1)[idx].reshape(-1, bars.state.shape[1])
    return PosteriorBars(np.ascontiguousarray(st), len(idx), bars.step, bars.conditions, bars.out_of_range,
                         bars.reasons, None if bars.params is None else bars.params[idx])


def measure(history: pd.DataFrame, model, *, batch: str | None = None, seed: int = 0,
            config: MeasureConfig = MeasureConfig(), posterior=None) -> MeasureAnalysis:
    """Rank the measurements worth taking on one flagged batch before its next lever decision.

    Parameters
    ----------
    history : DataFrame
        Step data in the schema (may hold many batches; choose one with ``batch``).
    model : recovery.causal.model.CausalModel
        Fitted model of the same process.
    batch : str, optional
    seed : int
    config : MeasureConfig
    posterior : recovery.calibration.PhysicsPosterior, optional
        Calibrated physics (``recovery.pipeline.load_posterior(model_dir)``).

    Returns
    -------
    MeasureAnalysis

    Raises
    ------
    MeasureError
        The batch is not in the history, has finished or been decided, or no
        inspection has flagged it (nothing to decide).
    """
    from recovery.recommend import RecommendationError, batch_situation

    process = model.graph_.process
    try:
        sit = batch_situation(history, process, batch)
    except RecommendationError as exc:
        raise MeasureError(str(exc)) from None
    if not flagged_at(process, sit.history):
        raise MeasureError(f"batch {sit.batch_id} has no diagnosis: no inspection up to step {sit.step} "
                           f"flagged it, so there is no decision to inform")
    return measure_situation(sit, model, seed=seed, config=config, posterior=posterior)
