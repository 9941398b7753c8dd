"""Value of information for the plant: what a change to the inspection plan earns over a season.

The question is "where would one more gauge or station pay for itself?". The answer
is a prediction: simulate a season of batches of the plant's *world* (the process
file; the calibrated physics and the fault rates the causal model learnt, when a
model folder is given), play the plant's decision policy on them under today's
inspection plan and under each changed plan, and compare the net value batch by
batch.

The season itself (the world, the policies, :func:`play_season` with its common
random numbers) lives in :mod:`recovery.voi.season`; this module values changes to
the inspection plan with it.

The interval
------------
Batches are split into groups, each with one draw of the world (physics and fault
rates) when the world has several. The 94% interval is for the gain a season of
``season`` batches will show (scaled to 1,000 batches): it adds the batch-to-batch
spread of the paired differences over ``season`` batches, the spread between world
draws beyond what their own sampling explains, and the Monte Carlo error of the
estimate. :func:`rank_candidates` does this for every candidate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recovery.voi.candidates import Candidate, apply_change, check_candidate
from recovery.voi.season import (AgentPolicy, HeuristicPolicy, NonePolicy, SeasonResult, World,
                                 decisions_changed, history_flag_shares, inspection_cost,
                                 play_season, world_flag_shares, world_from_file, world_from_model)
from simulators.definition import Process, parse_process
from simulators.process import Simulator

__all__ = ["World", "world_from_file", "world_from_model", "inspection_cost", "HeuristicPolicy",
           "NonePolicy", "AgentPolicy", "SeasonResult", "play_season", "healthy_gates",
           "changed_process", "gain_interval", "rank_candidates", "payback_batches", "world_flag_shares",
           "history_flag_shares", "decisions_changed", "no_decision_reason", "value_shortlist",
           "unseen_change_interval", "Z94"]

Z94 = 1.8808  # two-sided 94% normal quantile


# ---- gates for new readings, changed files --------------------------------------------------

def healthy_gates(process: Process, step: int, characteristics: Sequence[str], sample: int, *,
                  n_batches: int = 400, false_flag: float = 0.005, seed: int = 0,
                  world: World | None = None) -> dict[str, tuple[float, float]]:
    """Gates for new readings at ``step``, set as the file's gates are: wide enough for healthy batches.

    Healthy batches (no faults) under the nominal plan are gauged at ``step`` on
    ``sample`` bars, of the file's physics or, with ``world``, spread over its physics
    draws (the calibrated physics: the plant the history shows, as far as it is known).
    Each characteristic's gate is the central
    ``1 - false_flag`` range of their sample means, widened by a fifth on each side
    (a gate that would flag a healthy batch in 200 helps no one). A characteristic
    where less is better (ovality, bow, roughness, cracks: its gates in the file all
    start at its final band's lower bound, or without gates its nominal lies in the
    lowest quarter of the band) gets a one-sided gate from that lower bound, as the file's.

    Why the world's physics: where the history cannot pin the physics down before the
    new reading (nothing gauges residual stress before step 15 on the default process,
    so the stress the straightener at step 4 adds is known to a factor of three), a gate
    set on the file's physics flags healthy batches of the plant in the draws where the
    file is wrong, and the prediction then charges the change for false alarms the plant
    would not have: an engineer installing the gauge would set its gate from its first
    weeks of healthy readings, i.e. from the plant's physics. The world's draws are the
    model's account of that physics; pooling them gives a gate wide enough for the plant
    whatever the draw, at the price of missing some faults the file's gate would catch.

    Returns
    -------
    dict
        ``{name: (lower, upper)}`` in the characteristic's unit.
    """
    sim = Simulator(process)
    rng = np.random.default_rng([seed, 3])
    cond = sim.sample_conditions(n_batches, rng, faults=False)
    state = sim.new_state(n_batches)
    if world is None:
        sim.run(state, 0, step, process.nominal_plan(), cond, rng)
    else:
        group = np.arange(n_batches) % world.n_sets
        sim.run(state, 0, step, process.nominal_plan(), cond, rng, params=world.params, param_set=group)
    bars = state.reshape(n_batches, process.bars_per_batch, process.n_chars)[:, :sample]
    out = {}
    for name in characteristics:
        c = process.char_index[name]
        z = rng.standard_normal(bars.shape[:2])
        means = (bars[:, :, c] + process.characteristics[c].gauge_sigma * z).mean(axis=1)
        lo, hi = np.quantile(means, [false_flag / 2, 1 - false_flag / 2])
        pad = 0.2 * (hi - lo)
        lo, hi = float(lo - pad), float(hi + pad)
        if _less_is_better(process, name):
            lo = min(lo, process.characteristics[c].lower)
        out[name] = (lo, hi)
    return out


def _less_is_better(process: Process, name: str) -> bool:
    ch = process.characteristics[process.char_index[name]]
    gates = [g for g in process.gates if g.characteristic == name]
    if gates:
        return all(g.lower == ch.lower for g in gates)
    return ch.nominal <= ch.lower + 0.25 * (ch.upper - ch.lower)


def changed_process(process_text: str, process: Process, c: Candidate, *, label: str | None = None,
                    gate_seed: int = 0, world: World | None = None,
                    gates: dict[str, tuple[float, float]] | None = None) -> tuple[str, Process]:
    """The changed file's text (with healthy gates for what is newly gauged) and its Process.

    The gates come from :func:`healthy_gates` (on ``world``'s physics when given), or
    are ``gates`` as given (e.g. a ranking's ``"gates"``, to write the file it valued).

    Raises
    ------
    recovery.voi.candidates.CandidateError
        If the candidate does not fit the process.
    """
    check_candidate(process, c)
    ins = {i.step: i for i in process.inspections}
    new = () if c.change == "raise_sample" else c.characteristics
    # a raised sample keeps its gates: a mean of more bars stays inside them more often
    if gates is None:
        gates = healthy_gates(process, c.step, new, c.sample, seed=gate_seed, world=world) if new else {}
    gates = {k: (float(v[0]), float(v[1])) for k, v in gates.items()}
    if c.step in ins:
        have = {g.characteristic for g in process.gates if g.step == c.step}
        gates = {k: v for k, v in gates.items() if k not in have}
    text = apply_change(process_text, c, gates)
    return text, parse_process(text, label or f"{process.name} ({c.label})")


# ---- ranking ----------------------------------------------------------------------------------

def no_decision_reason(process: Process, changed: Process, c: Candidate, res: SeasonResult, k: int,
                       policy) -> tuple[str, str] | None:
    """Why plan ``k`` of a season altered no decision of plan 0, or None if it altered some.

    A change acts in two ways: the rule may use its readings, and a new gate (or a
    larger sample at a gate) may flag a batch earlier, after which the rule acts on
    every deviation it has gauged. It cannot alter a decision in any season only when
    the rule cannot use the reading and no flag it raises leaves a free lever to move.

    Returns
    -------
    (basis, reason) : tuple of str, or None
        ``basis`` is ``"structural"`` when no season could show a difference,
        ``"season"`` when none showed in this season (with common random numbers:
        same batches, same noise) for the reason given.
    """
    if decisions_changed(res, k).any():
        return None
    if isinstance(policy, NonePolicy):
        return "structural", "the policy never acts on a reading"
    names = c.characteristics or next(i.measures for i in process.inspections if i.step == c.step)
    rule = getattr(policy, "rule", None)
    steps = changed.inspection_steps
    # the decisions a reading at c.step informs: from there until the next inspection gauging it again
    reach = {}
    for n in names:
        again = [s for s, i in zip(steps, changed.inspections) if s > c.step and n in i.measures]
        upto = min(again) if again else changed.n_steps
        reach[n] = [s for s in steps if c.step <= s < min(upto, changed.n_steps)]
    flags = (bool(_new_gates(process, changed, c.step)) or c.change == "raise_sample") \
        and bool(changed.free_levers(c.step).any())
    unused = ""
    if rule is not None:
        acts = {n: [s for s in reach[n]
                    if any(changed.free_levers(s)[j] for j in rule.levers_moving(changed.char_index[n]))]
                for n in names}
        if not any(acts.values()):
            by_next: dict[int, list[str]] = {}
            for n in names:
                again = [s for s, i in zip(steps, changed.inspections) if s > c.step and n in i.measures]
                by_next.setdefault(min(again) if again else changed.n_steps, []).append(n)
            why = "; ".join(f"{', '.join(ns)} before step {g} gauges {'it' if len(ns) == 1 else 'them'} again"
                            for g, ns in sorted(by_next.items()))
            unused = f"no free lever after step {c.step} moves {why}"
            if not flags:
                return "structural", f"{unused}, and no flag it raises leaves a lever to move: the rule cannot act on it"
        last = max((s for v in acts.values() for s in v), default=c.step)
    else:
        last = max((s for v in reach.values() for s in v), default=c.step)
    taken = res.taken[k]
    if unused:
        earlier = int(((taken > 0) & ((res.taken[0] == 0) | (taken < res.taken[0]))).sum())
        return "season", (f"{unused} (the rule cannot use the reading itself), and the {earlier} batches its gate "
                          f"flagged earlier than today's plan got the same decisions")
    m = int(((taken > 0) & (taken <= last)).sum())
    if m == 0:
        return "season", (f"no batch was flagged by step {last}, where the rule would read it "
                          f"(its gate flagged none of the {len(taken)} batches by then)")
    thr = getattr(rule, "threshold", None)
    within = f" (within {thr:.0%} of the band of the healthy trajectory)" if thr is not None else ""
    return "season", (f"the {m} batches flagged by step {last} got the same decisions: "
                      f"the readings moved no lever{within}")


def gain_interval(diff: np.ndarray, group: np.ndarray, *, season: int = 1000) -> tuple[float, float, float]:
    """Expected gain per 1,000 batches and the 94% interval of what a season will show.

    Parameters
    ----------
    diff : ndarray (n_batches,)
        Paired difference of net value per batch (changed minus today), in currency.
    group : ndarray of int (n_batches,)
        World draw of each batch.
    season : int
        Batches the realised figure is averaged over (the interval narrows with it).

    Returns
    -------
    (mean, low, high) : float
        In currency per 1,000 batches.
    """
    diff = np.asarray(diff, dtype=np.float64)
    n = len(diff)
    mean = float(diff.mean())
    groups = np.unique(group)
    within = float(diff.var(ddof=1)) if n > 1 else 0.0
    between = 0.0
    mc = within / n
    if len(groups) > 1:
        gm = np.array([diff[group == g].mean() for g in groups])
        ng = n / len(groups)
        within = float(np.mean([diff[group == g].var(ddof=1) for g in groups if (group == g).sum() > 1]))
        between = max(0.0, float(gm.var(ddof=1)) - within / ng)
        mc = float(gm.var(ddof=1)) / len(groups)
    sd = np.sqrt(between + within / season + mc)
    return 1000 * mean, 1000 * (mean - Z94 * sd), 1000 * (mean + Z94 * sd)


def unseen_change_interval(n_batches: int, impact: float) -> tuple[float, float]:
    """94% interval per 1,000 batches for a change that altered no decision on ``n_batches`` batches
    but could (``no_decision_basis == "season"``).

    Seeing no changed decision in ``n`` batches bounds the share of batches whose
    decision the change would move below ``-ln(0.06) / n`` (2.8 per ``n``, 94%: the
    "rule of three"); each such batch moves by at most ``impact`` (the largest move of
    one batch's net value under any change of the season, in currency). The interval is
    that rate times that move, either way: zero seen is not zero proven.
    """
    bound = 1000 * (-np.log(1 - 0.94) / max(n_batches, 1)) * impact
    return -float(bound), float(bound)


def _new_gates(process: Process, changed: Process, step: int) -> dict[str, list[float]]:
    """The gates the change added at ``step``: ``{name: [lower, upper]}``."""
    old = {g.characteristic for g in process.gates if g.step == step}
    return {g.characteristic: [float(g.lower), float(g.upper)] for g in changed.gates
            if g.step == step and g.characteristic not in old}


def rank_candidates(process_text: str, process: Process, candidates: Sequence[Candidate], world: World,
                    policy, *, n_batches: int = 1000, seed: int = 0, season: int = 1000,
                    progress: bool = False) -> dict:
    """Predict every candidate's gain, cost and payback on one simulated season.

    Parameters
    ----------
    process_text : str
        The process file's text (the changes are written into it).
    process : Process
        The same file, loaded; ``world.process`` must have its structure.
    candidates : sequence of Candidate
    world : World
    policy : HeuristicPolicy, NonePolicy or AgentPolicy
    n_batches : int
        Simulated batches (common to all plans).
    seed : int
    season : int
        Batches the interval's realised gain is averaged over (default 1,000).

    Returns
    -------
    dict
        ``{"candidates": [...], "n_batches", "seed", "season", "policy", "world",
        "baseline": {...}}``; each candidate ``{"change", "step", "characteristic",
        "sample", "label", "gain_per_1000", "low", "high", "cost_per_1000",
        "net_per_1000", "payback_batches", "recovered_per_1000",
        "early_scrap_per_1000", "flagged_per_1000", "decided_otherwise_per_1000",
        "alters_decisions", "no_decision_basis", "no_decision_reason", "index"}``,
        sorted by net gain (gain minus cost), best first; ``index`` is the candidate's
        position in ``candidates``. A change with ``alters_decisions`` false made the
        same decisions as today on every batch (gain exactly 0, interval 0..0; see
        :func:`no_decision_reason`): its place in the order comes from its cost alone,
        so a ranking worth checking is the one among the others. Money in the process
        file's currency.
    """
    changed = [changed_process(process_text, process, c, gate_seed=seed, world=world) for c in candidates]
    plans = [process] + [q for _, q in changed]
    res = play_season(world, plans, policy, n_batches, seed, progress=progress)
    # the most one batch's outcome moved under any change: what one changed decision can be worth
    impact = float(np.abs(res.net[1:] - res.net[0]).max()) if len(plans) > 1 else 0.0
    rows = []
    for k, c in enumerate(candidates, start=1):
        d = res.net[k] - res.net[0]
        inert = no_decision_reason(process, plans[k], c, res, k, policy)
        g, lo, hi = gain_interval(d, res.group, season=season)
        if inert is not None and inert[0] == "season":
            lo, hi = unseen_change_interval(n_batches, impact)
        cost = 1000 * float(res.inspection_cost[k] - res.inspection_cost[0])
        net = g - cost
        row = c.to_json() | {
            "label": c.label,
            "gain_per_1000": g, "low": lo, "high": hi, "cost_per_1000": cost, "net_per_1000": net,
            "payback_batches": payback_batches(g, cost, c.investment),
            "recovered_per_1000": 1000 * float(res.accepted[k].mean() - res.accepted[0].mean()),
            "early_scrap_per_1000": 1000 * float(res.scrapped[k].mean() - res.scrapped[0].mean()),
            "flagged_per_1000": 1000 * float((res.taken[k] > 0).mean() - (res.taken[0] > 0).mean()),
            "decided_otherwise_per_1000": 1000 * float(decisions_changed(res, k).mean()),
            "gates": _new_gates(process, plans[k], c.step),
            "alters_decisions": inert is None,
            "no_decision_basis": None if inert is None else inert[0],
            "no_decision_reason": None if inert is None else inert[1],
            "index": k - 1,
        }
        rows.append(row)
    rows.sort(key=lambda r: -r["net_per_1000"])
    return {"candidates": rows, "n_batches": n_batches, "seed": seed, "season": season,
            "policy": policy.name, "policy_description": getattr(policy, "description", policy.name), "world": world.source,
            "baseline": {"net_value_per_batch": float(res.net[0].mean()),
                         "accepted": float(res.accepted[0].mean()),
                         "flagged": float((res.taken[0] > 0).mean()),
                         "inspection_cost_per_batch": float(res.inspection_cost[0])}}


def payback_batches(gain_per_1000: float, cost_per_1000: float, investment: float) -> float | None:
    """Batches until a one-off ``investment`` is paid back by the net gain, or None if never.

    The running cost (``cost_per_1000``) is paid on every batch, so the net gain per
    batch is ``(gain - cost) / 1000``; without an investment a change with a positive
    net gain pays from the first batch (0).
    """
    net = (gain_per_1000 - cost_per_1000) / 1000
    if net <= 0:
        return None
    return float(investment / net)


def value_shortlist(ranking: dict, process_text: str, process: Process, candidates: Sequence[Candidate],
                    world: World, policy, *, shortlist: int = 3, n_batches: int = 200, seed: int = 0,
                    season: int = 1000, skip_changes: Sequence[str] = (), rule=None,
                    progress: bool = False) -> dict:
    """Value the best few changes of a ranking again with a slower policy (the planner).

    A season under every candidate with the planner deciding is out of reach (tens of
    thousands of decisions); the rule screens, and the ``shortlist`` best changes by net
    gain among those that can alter a decision are valued again on ``n_batches``
    batches of the same world with ``policy`` deciding, every plan on the same batches
    with the same noise, and with the rule on those same batches for comparison.

    Parameters
    ----------
    ranking : dict
        :func:`rank_candidates`' result (its rows get a ``"shortlist"`` entry).
    process_text, process, candidates, world
        As given to :func:`rank_candidates`.
    policy : AgentPolicy
        E.g. ``AgentPolicy(PlannerAgent(model, posterior=..., budget="tiny"))``.
    shortlist : int
        Changes to value again.
    n_batches : int
        Batches of the shortlist's season (fewer than the screen's: the policy is slow).
    seed : int
    season : int
        Batches the interval's realised gain is averaged over.
    skip_changes : sequence of str
        Kinds of change the policy cannot use (a planner whose causal model does not gauge
        a new station reads nothing there: ``("add_inspection",)``); they are passed over.
    rule : HeuristicPolicy, optional
        Played on the same batches for comparison (default: the heuristic rule).

    Returns
    -------
    dict
        ``{"policy", "policy_description", "n_batches", "seed", "season", "asked",
        "skipped": [labels], "rows": [...]}``; each row ``{"index", "label",
        "gain_per_1000", "low", "high", "net_per_1000", "rule_gain_per_1000",
        "decided_otherwise_per_1000"}`` in the screen's order. The same entries, less the
        index and label, go into the ranking's rows as ``"shortlist"``.
    """
    rows = [r for r in ranking["candidates"] if r["alters_decisions"]]
    picked = [r for r in rows if r["change"] not in skip_changes][:shortlist]
    last = rows.index(picked[-1]) if picked else len(rows)
    skipped = [r["label"] for r in rows[:last + 1] if r["change"] in skip_changes]
    plans = [process] + [changed_process(process_text, process, candidates[r["index"]], gates=r["gates"])[1]
                         for r in picked]
    res = play_season(world, plans, policy, n_batches, seed, progress=progress)
    ref = play_season(world, plans, rule or HeuristicPolicy(process), n_batches, seed)
    impact = max(float(np.abs(res.net[1:] - res.net[0]).max()) if len(plans) > 1 else 0.0,
                 float(np.abs(ref.net[1:] - ref.net[0]).max()) if len(plans) > 1 else 0.0)
    out = []
    for k, r in enumerate(picked, start=1):
        g, lo, hi = gain_interval(res.net[k] - res.net[0], res.group, season=season)
        if not decisions_changed(res, k).any():  # none seen on these batches is not none possible
            lo, hi = unseen_change_interval(n_batches, impact)
        entry = {"gain_per_1000": g, "low": lo, "high": hi, "net_per_1000": g - r["cost_per_1000"],
                 "rule_gain_per_1000": 1000 * float((ref.net[k] - ref.net[0]).mean()),
                 "decided_otherwise_per_1000": 1000 * float(decisions_changed(res, k).mean())}
        r["shortlist"] = entry
        out.append({"index": r["index"], "label": r["label"]} | entry)
    return {"policy": policy.name, "policy_description": getattr(policy, "description", policy.name),
            "n_batches": n_batches, "seed": seed, "season": season, "asked": getattr(policy, "asked", None),
            "skipped": skipped, "rows": out,
            "baseline_net_value_per_batch": float(res.net[0].mean()),
            "rule_baseline_net_value_per_batch": float(ref.net[0].mean())}
