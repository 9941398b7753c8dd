"""Closed-loop evaluation on fresh simulated batches.

A *case* is a batch flagged at the first inspection after its first fault,
frozen at that inspection: its true bars, its conditions (including any later
faults), and the gauge readings so far. Every agent continues the same case
with the same continuation seed, so agents are compared on identical futures.

The world (``sim``) may be a *plant*: a process file of the same structure as
the agents' file but other physics. The batches then run on the plant's
physics, the oracle plans on it from the true state, and every other agent
sees only the agents' ``process`` (its levers, bounds and step data); by
default the two are the same file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from simulators.cases import Case, continue_case, flagged_cases
from simulators.process import Simulator

__all__ = ["Case", "flagged_cases", "continue_case", "nontriviality", "physics_difference", "decision_value"]


def physics_difference(process, plant) -> dict[tuple[int, str], float]:
    """The plant's physics parameters that differ from the process file's.

    ``{(step, param): plant value}`` over every step parameter no lever sets:
    what a perfect calibration would find. ``from_values(process, [it])`` makes
    the perfect-knowledge posterior that brackets a real calibration from above.

    Raises
    ------
    ValueError
        If the two do not share a structure (the first difference).
    """
    diff = process.structure_difference(plant)
    if diff is not None:
        raise ValueError(f"not a plant of process '{process.name}': {diff}")
    levers = {(lv.step, lv.sets) for lv in process.levers}
    out = {}
    for a, b in zip(process.steps, plant.steps):
        for name, v in b.params.items():
            if (a.index, name) not in levers and v != a.params[name]:
                out[(a.index, name)] = float(v)
    return out


def nontriviality(sim: Simulator, n_batches: int, seed: int, *, oracle_kwargs: dict | None = None,
                  progress: bool = False) -> dict:
    """How hard the process is: do-nothing versus the oracle on flagged batches.

    Both continue every case with the same noise; the oracle plans once at the
    detection inspection from the true state.

    Returns
    -------
    dict
        ``n_batches``, ``n_faulty``, ``n_flagged``, ``none_recovery``,
        ``oracle_recovery``, ``by_fault`` and ``oracle_seconds_per_case``.
    """
    from recovery.agents.oracle import OracleSearch

    cases, n_faulty = flagged_cases(sim, n_batches, seed)
    oracle = OracleSearch(sim, **(oracle_kwargs or {}))
    nominal = sim.process.nominal_plan()
    rows = []
    it = cases
    if progress:
        from tqdm import tqdm
        it = tqdm(cases, desc="oracle", unit="batch")
    t0 = time.perf_counter()
    for i, c in enumerate(it):
        none_ok = bool(sim.accepted(continue_case(sim, c, nominal)[0])[0])
        plan, _, _ = oracle.search(c.state, c.detect_step, c.conditions, seed=seed * 1000 + i)
        assert sim.process.within_bounds(plan)
        oracle_ok = bool(sim.accepted(continue_case(sim, c, plan)[0])[0])
        rows.append((c.fault, none_ok, oracle_ok))
    dt = time.perf_counter() - t0
    by_fault: dict[str, dict] = {}
    for f in sorted({r[0] for r in rows}):
        sub = [r for r in rows if r[0] == f]
        by_fault[f] = {"n": len(sub), "none_recovery": float(np.mean([r[1] for r in sub])),
                       "oracle_recovery": float(np.mean([r[2] for r in sub]))}
    n = max(len(rows), 1)
    return {
        "n_batches": n_batches, "seed": seed, "n_faulty": n_faulty, "n_flagged": len(rows),
        "none_recovery": sum(r[1] for r in rows) / n,
        "oracle_recovery": sum(r[2] for r in rows) / n,
        "by_fault": by_fault,
        "oracle_seconds_per_case": dt / n,
    }


@dataclass(frozen=True)
class Outcome:
    """How one agent did on one case."""

    agent: str
    batch_id: str
    fault: str
    accepted: bool
    scrapped: bool
    lever_cost: float
    net_value: float
    latencies: tuple[float, ...]
    violations: int
    plan: np.ndarray
    p_accept: float | None = None
    """The agent's own P(accept) at its first decision (None: it gives none)."""


def situation_for(sim: Simulator, case: Case, step: int, obs: np.ndarray, plan: np.ndarray,
                  state: np.ndarray, *, truth: bool, process=None):
    """The agent's view of a case at inspection ``step`` (truth only for the oracle).

    ``process`` is the file the agents know (default: the world's, ``sim.process``);
    the step data show the same structure either way.
    """
    from recovery.agents.base import Situation
    from simulators.schema import observations_frame

    view = sim.process if process is None else process
    hist = observations_frame(view, case.conditions, obs[None], plan[None], upto_step=step)
    # the same readings as an array, for agents that decide on arrays (what the history shows)
    readings = obs.copy()
    readings[np.asarray(view.inspection_steps) > step] = np.nan
    return Situation(view, case.batch_id, step, hist, plan.copy(),
                     true_state=state.copy() if truth else None,
                     true_conditions=case.conditions if truth else None, readings=readings)


def closed_loop(sim: Simulator, case: Case, agent, *, seed: int, process=None) -> Outcome:
    """Let ``agent`` act from the detection inspection, re-planning at every later one.

    The batch's future noise comes from the case's own seed, the same for every
    agent. An agent whose proposal carries ``extra["decision"] == "scrap"`` stops
    the batch there: the scrap cost is paid and the remaining processing saved. An
    extra measurement an agent had taken (``extra["measurement_cost"]``, currency) is
    subtracted from the net value.
    ``sim`` is the world; ``process`` what the agent is shown (default: ``sim.process``).
    """
    from recovery.agents.base import LeverBoundError

    p = sim.process
    eco = p.economics
    agent.reset()
    rng = np.random.default_rng(case.seed)
    plan = p.nominal_plan()
    state = case.state.copy()
    obs = case.obs[None].copy()
    step = case.detect_step
    later = [s for s in p.inspection_steps if s > step]
    lat, violations, scrapped, p_first = [], 0, False, None
    paid = 0.0  # extra measurements an agent had taken (planner+measure), currency
    for k, nxt in enumerate(later):
        sit = situation_for(sim, case, step, obs[0], plan, state, truth=agent.needs_truth, process=process)
        try:
            prop = agent.propose(sit, seed=seed + 7919 * k)
        except LeverBoundError:
            violations += 1
            prop = None
        if prop is not None:
            lat.append(prop.latency_s)
            plan = prop.plan
            paid += float(prop.extra.get("measurement_cost", 0.0))
            if k == 0 and prop.p_accept is not None:
                p_first = float(prop.p_accept)
            if prop.extra.get("decision") == "scrap":
                scrapped = True
                break
        sim.run(state, step, nxt, plan, case.conditions, rng, obs=obs)
        step = nxt
    cost = float(p.lever_cost(np.where(~p.free_levers(step), plan, p.nominal_plan())))
    if scrapped:
        accepted = False
        net = -eco.scrap_cost + eco.processing_cost_per_step * (p.n_steps - step) - cost
    else:
        accepted = bool(sim.accepted(state)[0])
        net = (eco.batch_value if accepted else -eco.scrap_cost) - cost
    net -= paid
    return Outcome(agent.name, case.batch_id, case.fault, accepted, scrapped, cost, net,
                   tuple(lat), violations, plan, p_first)


def decision_value(sim: Simulator, case: Case, decisions, *, replays: int = 1000, seed: int = 0) -> np.ndarray:
    """Expected net value (currency) of first decisions on a case, each held to the end,
    from the batch's true state over many replays of its future.

    The closed loop (:func:`closed_loop`) plays one future per case: whether a batch ends
    in spec is a coin flip worth ``batch_value + scrap_cost``, and comparing agents on one
    flip each drowns small differences in that noise. Here every decision is scored on
    the true bars at the detection step and the case's own conditions (its later faults
    as they will happen) over ``replays`` futures of the process noise, the same futures
    for every decision (common random numbers): ``P(accept) * batch_value - (1 -
    P(accept)) * scrap_cost`` minus the levers paid, or the scrap with the processing
    saved. It is the closed loop's net value averaged over the future noise given the
    case (a Rao-Blackwellised estimate), except that the plan is held: the re-planning
    at later inspections is not replayed. The first decision is what a measurement
    before it can change, and what the value of information analysis values.

    Parameters
    ----------
    sim : Simulator
        The world (the plant).
    case : Case
    decisions : sequence of (plan, scrapped)
        Full-length plan (ndarray (n_levers,), physical units) and whether the batch is
        scrapped at the detection step.
    replays : int
        Futures of the process noise.
    seed : int

    Returns
    -------
    ndarray (len(decisions),)
        Net value per batch (currency); two decisions with the same plan and scrap
        flag get the same value.
    """
    p = sim.process
    eco = p.economics
    s = case.detect_step
    done = ~p.free_levers(s)     # levers that have acted: paid whatever comes next
    cond = case.conditions.take(np.zeros(replays, dtype=int))
    base = np.tile(case.state, (replays, 1))
    out = []
    for plan, scrapped in decisions:
        plan = np.asarray(plan, dtype=np.float64)
        if scrapped:
            cost = float(p.lever_cost(np.where(done, plan, p.nominal_plan())))
            out.append(-eco.scrap_cost + eco.processing_cost_per_step * (p.n_steps - s) - cost)
            continue
        st = base.copy()
        sim.run(st, s, p.n_steps, plan, cond, np.random.default_rng(seed))
        pa = float(sim.accepted(st).mean())
        out.append(pa * eco.batch_value - (1.0 - pa) * eco.scrap_cost - float(p.lever_cost(plan)))
    return np.array(out)


def summarise_outcomes(outcomes: dict[str, list[Outcome]], n_batches: int, seed: int) -> dict:
    """The evaluation's JSON contract (see ``recovery evaluate --help``)."""
    n_flagged = len(next(iter(outcomes.values()))) if outcomes else 0
    base = {o.batch_id: o for o in outcomes.get("none", [])}
    oracle = {o.batch_id: o for o in outcomes.get("oracle", [])}
    agents = {}
    for name, outs in outcomes.items():
        n = max(len(outs), 1)
        lat = np.array([x for o in outs for x in o.latencies]) if outs else np.zeros(0)
        by_fault: dict[str, dict] = {}
        for f in sorted({o.fault for o in outs}):
            sub = [o for o in outs if o.fault == f]
            by_fault[f] = {"n": len(sub), "recovery_rate": sum(o.accepted for o in sub) / len(sub)}
        avoided = sum(o.accepted and not base[o.batch_id].accepted for o in outs if o.batch_id in base)
        agents[name] = {
            "recovery_rate": sum(o.accepted for o in outs) / n,
            "net_value": float(np.mean([o.net_value for o in outs])) if outs else 0.0,
            "scrap_avoided": avoided / n if base else None,
            "regret": float(np.mean([oracle[o.batch_id].net_value - o.net_value for o in outs]))
            if oracle else None,
            "lever_bound_violations": int(sum(o.violations for o in outs)),
            "latency_p50_s": float(np.median(lat)) if len(lat) else 0.0,
            "latency_p95_s": float(np.quantile(lat, 0.95)) if len(lat) else 0.0,
            "by_fault": by_fault,
            "calibration": _calibration(outs),
        }
    return {"n_batches": n_batches, "n_flagged": n_flagged, "seed": seed, "agents": agents}


def _calibration(outs: list[Outcome]) -> dict | None:
    """The agent's own P(accept) at its first decision against what happened.

    ``{"n", "predicted", "observed", "brier", "bins": [{"low", "high", "n", "predicted",
    "observed"}]}`` over the cases where the agent gave a probability (None if it never
    does). Scrapped batches count as not accepted.
    """
    pairs = [(o.p_accept, float(o.accepted)) for o in outs if o.p_accept is not None]
    if not pairs:
        return None
    p, y = np.array(pairs).T
    bins = []
    for lo, hi in ((0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.0 + 1e-9)):
        m = (p >= lo) & (p < hi)
        if m.any():
            bins.append({"low": lo, "high": min(hi, 1.0), "n": int(m.sum()),
                         "predicted": float(p[m].mean()), "observed": float(y[m].mean())})
    return {"n": len(p), "predicted": float(p.mean()), "observed": float(y.mean()),
            "brier": float(np.mean((p - y) ** 2)), "bins": bins}


EVAL_CHUNK = 250


def chunk_seed(seed: int, chunk: int) -> int:
    """Seed of evaluation chunk ``chunk``: independent of how chunks are spread."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def evaluate_chunk(sim: Simulator, agents: list, n_batches: int, seed: int, chunk: int, *,
                   process=None) -> dict[str, list[Outcome]]:
    """Play every agent on the flagged cases of one seeded chunk of fresh batches.

    ``sim`` is the world (the plant); ``process`` what the agents see (default: ``sim.process``).
    """
    n = min(EVAL_CHUNK, n_batches - chunk * EVAL_CHUNK)
    cs = chunk_seed(seed, chunk)
    # batch ids run on across chunks: B-1 .. B-n_batches
    cases, _ = flagged_cases(sim, n, cs, first_id=chunk * EVAL_CHUNK + 1)
    out: dict[str, list[Outcome]] = {a.name: [] for a in agents}
    for i, case in enumerate(cases):
        for a in agents:
            out[a.name].append(closed_loop(sim, case, a, seed=(cs + 7919 * i) % (2**31 - 1),
                                           process=process))
    return out


def play_agents(sim: Simulator, agents: list, n_batches: int, seed: int, *,
                progress: bool = False, process=None) -> dict[str, list[Outcome]]:
    """Every agent's :class:`Outcome` on every flagged case of ``n_batches`` fresh batches.

    Fresh batches are simulated in seeded chunks of ``EVAL_CHUNK`` (so the
    figures do not depend on how chunks are spread over workers); every agent
    plays every flagged case of a chunk with the same future noise. ``sim`` is
    the world; ``process`` what the agents see (default: ``sim.process``).
    """
    from tqdm import tqdm

    n_chunks = (n_batches + EVAL_CHUNK - 1) // EVAL_CHUNK
    outcomes: dict[str, list[Outcome]] = {a.name: [] for a in agents}
    for c in tqdm(range(n_chunks), desc="evaluate", unit="chunk", disable=not progress):
        for name, outs in evaluate_chunk(sim, agents, n_batches, seed, c, process=process).items():
            outcomes[name].extend(outs)
    return outcomes


def evaluate_agents(sim: Simulator, agents: list, n_batches: int, seed: int, *,
                    progress: bool = False, process=None) -> dict:
    """Closed-loop evaluation of agents on the same fresh flagged batches.

    Parameters
    ----------
    sim : Simulator
        The true simulator (the world the agents act in: the plant).
    agents : list of Agent
    n_batches : int
        Fresh batches simulated; only the flagged ones are played (see
        :func:`play_agents`).
    seed : int
    process : Process, optional
        The process file the agents are shown, of the same structure as
        ``sim.process`` (default: ``sim.process``, a world exactly as the file says).

    Returns
    -------
    dict
        ``{"n_batches", "n_flagged", "seed", "agents": {name: {"recovery_rate",
        "net_value", "scrap_avoided", "regret", "lever_bound_violations",
        "latency_p50_s", "latency_p95_s", "by_fault": {fault: {"n", "recovery_rate"}}}}}``
    """
    return summarise_outcomes(play_agents(sim, agents, n_batches, seed, progress=progress, process=process),
                              n_batches, seed)


def outcomes_frame(outcomes: dict[str, list[Outcome]]) -> "pd.DataFrame":
    """One row per (agent, case): accepted, scrapped, lever cost, net value, and the
    regret against the oracle on the same case (NaN without an oracle)."""
    import pandas as pd

    oracle = {o.batch_id: o.net_value for o in outcomes.get("oracle", [])}
    rows = [{"agent": o.agent, "batch_id": o.batch_id, "fault": o.fault, "accepted": o.accepted,
             "scrapped": o.scrapped, "lever_cost": o.lever_cost, "net_value": o.net_value,
             "regret": oracle.get(o.batch_id, np.nan) - o.net_value,
             "latency_s": float(np.mean(o.latencies)) if o.latencies else 0.0}
            for outs in outcomes.values() for o in outs]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ChunkOutcomes:
    chunk: int
    outcomes: dict


def evaluate_chunk_remote(process, names: tuple[str, ...], n_batches: int, seed: int, *, chunk: int,
                          model_dir: str | None = None, policy_path: str | None = None,
                          budget: str = "default", plant=None,
                          calibrated: bool = True) -> ChunkOutcomes:
    """One evaluation chunk on a worker: agents are rebuilt there from names and paths.

    ``plant`` (default: ``process``) is the world; the agents see ``process``.
    """
    import recovery.voi  # noqa: F401  (registers the planner+measure agent)
    from recovery.agents import make_agent
    from recovery.pipeline import load_model, load_policy, load_posterior

    sim = Simulator(process if plant is None else plant)
    model = load_model(model_dir) if model_dir else None
    posterior = load_posterior(model_dir) if model_dir and calibrated else None
    policy = load_policy(policy_path) if policy_path else None
    agents = [make_agent(n, sim, model=model, policy=policy, budget=budget, process=process,
                         posterior=posterior) for n in names]
    return ChunkOutcomes(chunk, evaluate_chunk(sim, agents, n_batches, seed, chunk, process=process))


def evaluate_on_cluster(client, process, names: tuple[str, ...], n_batches: int, seed: int, *,
                        model_dir: str | None = None, policy_path: str | None = None,
                        budget: str = "default", progress: bool = False, plant=None,
                        calibrated: bool = True) -> dict:
    """:func:`evaluate_agents` with the chunks run on a Dask cluster."""
    from tqdm import tqdm

    from recovery.distributed import ordered_map

    n_chunks = (n_batches + EVAL_CHUNK - 1) // EVAL_CHUNK
    outcomes: dict[str, list[Outcome]] = {n: [] for n in names}
    results = ordered_map(client, evaluate_chunk_remote, n_chunks, process, tuple(names), n_batches, seed,
                          model_dir=model_dir, policy_path=policy_path, budget=budget, plant=plant,
                          calibrated=calibrated)
    for r in tqdm(results, total=n_chunks, desc="evaluate", unit="chunk", disable=not progress):
        for name, outs in r.outcomes.items():
            outcomes[name].extend(outs)
    return summarise_outcomes(outcomes, n_batches, seed)
