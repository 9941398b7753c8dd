"""Checks of a fitted causal model against the simulator's ground truth.

Used by ``benchmarks/causal_accuracy.py`` and the causal-model notebook; every
check simulates fresh batches on its own seed, so it never sees training data.

- :func:`parameter_coverage`: the share of mechanism parameters whose true value lies in
   the 94% HDI. True counterparts, computed by simulation with common random
   numbers on fault-free batches:
   - ``mean``: mean of each gauged characteristic at each inspection, nominal
     levers, at the reference production day;
   - ``bar_sd``: bar-to-bar spread within a batch at each gauged pair;
   - ``drift``: total change per 100 production days of each gauged pair;
   - ``lever``: effect of each lever at its lower and upper effective bound on
     the characteristics it reaches at the next inspection that gauges them;
   - ``carry``: how much of a deviation at the previous gauge carries to the
     next (slope by perturbing the start state).
   The fault-shift probabilities per segment are reported apart (the mixture
   also absorbs misfit, so its truth is only approximate).
- :func:`root_cause_accuracy`: top-1 / top-3 accuracy over the fault catalogue on flagged
   batches of fresh seeds (``simulators.cases.flagged_cases``), diagnosed at
   the flagging inspection.
- :func:`calibration`: fresh batches, each stopped at a routine inspection drawn
   in advance (half of them) or at the first inspection that flags it (the
   other half; a decision point that depends on the history up to it only),
   continued under a random plan
   (nominal, or 1-3 later levers moved uniformly in their bounds); predicted
   P(accept) against the simulated outcome. Reliability bins, Brier score, and
   the Brier score of a naive baseline (the training acceptance rate). Each
   bin also gets the simulator's own P(accept) from the batch's true state at
   the decision (``rollouts`` futures under the same plan, averaged): it has
   the same expectation as the observed rate but not the outcome's coin flip,
   so a bin of 100 batches pins the rate down several times better. Bins are
   judged on it; the observed rate and its binomial standard error are
   reported beside it.
"""

from __future__ import annotations

import time

import numpy as np

from recovery.causal.layout import segment_fault_rates
from recovery.causal.model import CausalModel
from simulators.cases import flagged_cases
from simulators.process import Conditions, Simulator
from simulators.schema import observations_frame

__all__ = ["HDI", "hdi_contains", "parameter_coverage", "root_cause_accuracy", "calibration"]

HDI = 0.94


def hdi_contains(draws: np.ndarray, truth: float, prob: float = HDI) -> bool:
    x = np.sort(draws)
    n = len(x)
    k = int(np.floor(prob * n))
    i = int(np.argmin(x[k:] - x[: n - k]))
    return bool(x[i] <= truth <= x[i + k])


# ---------------------------------------------------------------------------
# Truth by simulation
# ---------------------------------------------------------------------------

def fault_free(sim: Simulator, n: int, day: float, seed: int) -> Conditions:
    c = sim.sample_conditions(n, np.random.default_rng(seed), time=np.full(n, day), faults=False)
    return c


def run_to(sim: Simulator, state, start, stop, plan, cond, seed):
    st = state.copy()
    sim.run(st, start, stop, plan, cond, np.random.default_rng(seed))
    return st


def batch_means(sim: Simulator, state: np.ndarray) -> np.ndarray:
    p = sim.process
    return state.reshape(-1, p.bars_per_batch, p.n_chars).mean(axis=1)


def states_at_inspections(sim: Simulator, plan, cond, seed) -> list[np.ndarray]:
    """Every bar's state at each inspection (fault-free, one continuous run)."""
    p = sim.process
    st = sim.new_state(cond.n_batches)
    rng = np.random.default_rng(seed)
    out, prev = [], 0
    for ins in p.inspections:
        sim.run(st, prev, ins.step, plan, cond, rng)
        out.append(st.copy())
        prev = ins.step
    return out


def parameter_coverage(model: CausalModel, sim: Simulator, n_truth: int, seed: int) -> dict:
    """Share of mechanism parameters whose simulated true value lies in the 94% HDI.

    Returns ``{"n", "coverage", "by_group", "missed", "fault_rates", "items"}``;
    ``items`` holds every parameter's truth, posterior mean and whether it is covered.
    """
    p = sim.process
    g, lay, std = model.graph_, model.layout_, model.std_
    P = model.params_
    mod = [p.char_index[c] for c in g.modeled]
    nom = p.nominal_plan()
    cond = fault_free(sim, n_truth, std.day_ref, seed)
    plan = np.broadcast_to(nom, (n_truth, len(p.levers)))
    states = states_at_inspections(sim, plan, cond, seed + 1)
    rows = []

    def add(group, name, draws, truth):
        rows.append({"group": group, "name": name, "truth": float(truth),
                     "mean": float(np.mean(draws)), "covered": hdi_contains(draws, truth)})

    # means and bar spread at every gauged pair
    for q, ins in enumerate(p.inspections):
        bars = states[q].reshape(n_truth, p.bars_per_batch, p.n_chars)
        for c in np.flatnonzero(lay.gauged[q]):
            ci = mod[c]
            truth = bars[:, :, ci].mean()
            draws = std.centre[q, c] + std.scale[c] * P.m[:, q, c]
            add("mean", f"mean[{ins.step},{g.modeled[c]}]", draws, truth)
            tsd = np.sqrt(bars[:, :, ci].var(axis=1, ddof=1).mean())
            add("bar_sd", f"bar_sd[{ins.step},{g.modeled[c]}]", P.sbar[:, q, c] * std.scale[c], tsd)
    # drift: total effect of 100 days at each gauged pair (common random numbers)
    lo = fault_free(sim, n_truth, std.day_ref - 50.0, seed + 2)
    hi = fault_free(sim, n_truth, std.day_ref + 50.0, seed + 2)
    s_lo = states_at_inspections(sim, plan, lo, seed + 3)
    s_hi = states_at_inspections(sim, plan, hi, seed + 3)
    Kd = np.zeros((P.n_draws, lay.d))
    for q, ins in enumerate(p.inspections):
        Kd = np.einsum("sab,sb->sa", P.A[:, q], Kd) + P.G[:, q] if q else P.G[:, q].copy()
        diff = batch_means(sim, s_hi[q]).mean(axis=0) - batch_means(sim, s_lo[q]).mean(axis=0)
        for c in np.flatnonzero(lay.gauged[q]):
            add("drift", f"drift[{ins.step},{g.modeled[c]}]", Kd[:, c] * std.scale[c], diff[mod[c]])
    # lever effects at the bounds, at the inspection whose segment holds them
    low, high = p.lever_bounds()
    for j, lv in enumerate(p.levers):
        q = g.segment_of_step(lv.step)
        start = p.inspection_steps[q - 1] if q else 0
        for qq in range(q, lay.Q):
            cs = [c for c in range(lay.d) if lay.segments[qq].levers[c, j]]
            if cs:
                break
        else:
            continue
        base_state = states[q - 1] if q else sim.new_state(n_truth)
        start = p.inspection_steps[q - 1] if q else 0
        stop = p.inspection_steps[qq]
        ref = batch_means(sim, run_to(sim, base_state, start, stop, plan, cond, seed + 10 + j)).mean(axis=0)
        for v in (low[j], high[j]):
            if abs(v - nom[j]) < 1e-12:
                continue
            pl = nom.copy()
            pl[j] = v
            moved = batch_means(sim, run_to(sim, base_state, start, stop, np.broadcast_to(pl, plan.shape),
                                            cond, seed + 10 + j)).mean(axis=0)
            phi = std.features(pl)
            for c in cs:
                if not lay.gauged[qq, c]:
                    continue
                eff = np.einsum("sf,f->s", P.B[:, qq, c], phi) * std.scale[c]
                add("lever", f"lever[{lv.name}={v:g}->{g.modeled[c]}@{p.inspection_steps[qq]}]", eff,
                    moved[mod[c]] - ref[mod[c]])
    # carry-over slopes: perturb the start state (all bars of every batch) by one scale unit
    for k in range(len(lay.carry_i)):
        q, c, c2 = int(lay.carry_q[k]), int(lay.carry_c[k]), int(lay.carry_c2[k])
        if not lay.gauged[q, c] or q == 0:
            continue
        s0 = q - 1
        while s0 > 0 and not lay.segments[s0].acted[c2] and not lay.gauged[s0, c2]:
            s0 -= 1
        if s0 != q - 1:
            continue  # the coefficient spans a deferred stretch; its truth is not one slope
        base_state = states[s0]
        start, stop = p.inspection_steps[s0], p.inspection_steps[q]
        delta = std.scale[c2]
        pert = base_state.copy()
        pert[:, mod[c2]] += delta
        a = batch_means(sim, run_to(sim, base_state, start, stop, plan, cond, seed + 100 + k)).mean(axis=0)
        b = batch_means(sim, run_to(sim, pert, start, stop, plan, cond, seed + 100 + k)).mean(axis=0)
        slope = (b[mod[c]] - a[mod[c]]) / delta
        add("carry", f"carry[{stop},{g.modeled[c2]}->{g.modeled[c]}]",
            P.A[:, q, c, c2] * std.scale[c] / std.scale[c2], slope)
    groups = sorted({r["group"] for r in rows})
    by = {gname: {"n": sum(r["group"] == gname for r in rows),
                  "coverage": float(np.mean([r["covered"] for r in rows if r["group"] == gname]))}
          for gname in groups}
    # fault-shift probability per segment vs the catalogue
    rates = []
    catalogue = segment_fault_rates(p, g)
    for seg in g.segments():
        if P.pi[:, seg.index].max() == 0:
            continue
        truth = catalogue[seg.index]
        rates.append({"segment_end": p.inspection_steps[seg.index], "truth": float(truth),
                      "posterior_mean": float(P.pi[:, seg.index].mean()),
                      "covered": hdi_contains(P.pi[:, seg.index], truth)})
    return {"n": len(rows), "coverage": float(np.mean([r["covered"] for r in rows])), "by_group": by,
            "missed": [r for r in rows if not r["covered"]], "fault_rates": rates, "items": rows}


# ---------------------------------------------------------------------------
# Root cause
# ---------------------------------------------------------------------------

def root_cause_accuracy(model: CausalModel, sim: Simulator, n_batches: int, seed: int) -> dict:
    """Top-1 / top-3 accuracy of ``root_cause`` over the fault catalogue, on the
    flagged batches of ``n_batches`` fresh ones, diagnosed at the flagging inspection."""
    p = sim.process
    cases, n_faulty = flagged_cases(sim, n_batches, seed)
    top1, top3, rows, lat = [], [], [], []
    for c in cases:
        hist = observations_frame(p, c.conditions, c.obs[None], p.nominal_plan()[None], upto_step=c.detect_step)
        t = time.perf_counter()
        rc = model.root_cause(hist)
        lat.append(time.perf_counter() - t)
        names = [x.cause for x in rc.causes]
        top1.append(bool(names and names[0] == c.fault))
        top3.append(c.fault in names[:3])
        rows.append((c.fault, top1[-1], top3[-1], names[0] if names else ""))
    by = {}
    for f in sorted({r[0] for r in rows}):
        sub = [r for r in rows if r[0] == f]
        confused = {}
        for r in sub:
            if not r[1]:
                confused[r[3]] = confused.get(r[3], 0) + 1
        by[f] = {"n": len(sub), "top1": float(np.mean([r[1] for r in sub])),
                 "top3": float(np.mean([r[2] for r in sub])), "top1_instead": confused}
    return {"n_batches": n_batches, "seed": seed, "n_faulty": n_faulty, "n_flagged": len(cases),
            "top1": float(np.mean(top1)) if top1 else None, "top3": float(np.mean(top3)) if top3 else None,
            "latency_median_s": float(np.median(lat)) if lat else None, "by_fault": by}


# ---------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------

def calibration(model: CausalModel, sim: Simulator, n_batches: int, seed: int, base_rate: float,
                bins: int = 10, min_bin: int = 30, rollouts: int = 100) -> dict:
    """Predicted P(accept) against simulated outcomes: reliability bins and Brier
    scores (model and the naive ``base_rate``) on ``n_batches`` fresh batches.

    A bin's ``expected`` is the mean of the simulator's P(accept) from each
    batch's true state (``rollouts`` futures); ``gap`` is ``|predicted -
    expected|``; ``observed`` and ``se`` are the outcomes' rate and its binomial
    standard error.
    """

    p = sim.process
    rng = np.random.default_rng(seed)
    cond = sim.sample_conditions(n_batches, rng, time=rng.uniform(0, p.season_days, n_batches))
    nom = p.nominal_plan()
    lo, hi = p.lever_bounds()
    ints = np.array([lv.integer for lv in p.levers])
    plan_rng = np.random.default_rng(seed + 1)
    pred, outcome, truth, out_range, where = [], [], [], [], []
    n_insp = len(p.inspections)
    for b in range(n_batches):
        cb = cond.take([b])
        st, ob = sim.new_state(1), sim.new_obs(1)
        rb = np.random.default_rng([seed, b])
        # The decision point must depend on the history up to it only (else the
        # outcome leaks into the selection): half of the batches are decided at a
        # routine inspection drawn in advance, half at the first inspection that
        # flags them (batches never flagged before the end are then not used).
        routine = plan_rng.random() < 0.5
        target = p.inspections[int(plan_rng.integers(0, n_insp - 1))].step
        prev, decision = 0, None
        for q, ins in enumerate(p.inspections[:-1]):
            sim.run(st, prev, ins.step, nom, cb, rb, obs=ob)
            prev = ins.step
            if (routine and ins.step == target) or (not routine and sim.flags(ob)[0, q]):
                decision = ins.step
                break
        if decision is None:
            continue
        plan = nom.copy()
        if plan_rng.random() < 0.7:
            free = np.flatnonzero(p.free_levers(decision))
            if len(free):
                k = min(len(free), int(plan_rng.integers(1, 4)))
                for j in plan_rng.choice(free, k, replace=False):
                    v = lo[j] + plan_rng.random() * (hi[j] - lo[j])
                    plan[j] = np.clip(np.round(v), lo[j], hi[j]) if ints[j] else v
        hist = observations_frame(p, cb, ob, plan[None], upto_step=decision)
        pr = model.predict(hist, plan, n_draws=300, samples_per_draw=4, seed=b)
        futures = sim.rollout(st, decision, plan[None], rollouts,
                              int(np.random.default_rng([seed, b, 1]).integers(2**31)), cb)
        truth.append(float(np.mean(p.accepts(futures[0]))))
        sim.run(st, decision, p.n_steps, plan, cb, rb)
        pred.append(pr.p_accept)
        outcome.append(bool(sim.accepted(st)[0]))
        out_range.append(pr.out_of_range)
        where.append(decision)
    pred, outcome, truth = np.array(pred), np.array(outcome, dtype=float), np.array(truth)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(pred, edges) - 1, 0, bins - 1)
    table = []
    for i in range(bins):
        sel = idx == i
        if not sel.any():
            continue
        obs = float(outcome[sel].mean())
        row = {"bin": [float(edges[i]), float(edges[i + 1])], "n": int(sel.sum()),
               "predicted": float(pred[sel].mean()), "expected": float(truth[sel].mean()),
               "observed": obs, "se": float(np.sqrt(max(obs * (1 - obs), 1e-12) / sel.sum()))}
        row["gap"] = abs(row["predicted"] - row["expected"])
        row["gap_observed"] = abs(row["predicted"] - row["observed"])
        row["enough"] = bool(sel.sum() >= min_bin)
        table.append(row)
    enough = [r for r in table if r["enough"]]
    brier = float(np.mean((pred - outcome) ** 2))
    naive = float(np.mean((base_rate - outcome) ** 2))
    steps, counts = np.unique(where, return_counts=True)
    return {"n": int(len(pred)), "seed": seed, "accept_rate": float(outcome.mean()),
            "brier": brier, "brier_naive": naive, "naive_rate": float(base_rate),
            "brier_simulator": float(np.mean((truth - outcome) ** 2)), "rollouts": rollouts,
            "max_gap_enough_bins": float(max(r["gap"] for r in enough)) if enough else None,
            "bins_within_0_05": int(sum(r["gap"] <= 0.05 for r in enough)), "bins_enough": len(enough),
            "max_gap_observed_enough_bins": float(max(r["gap_observed"] for r in enough)) if enough else None,
            "min_bin": min_bin, "out_of_range_share": float(np.mean(out_range)),
            "decision_steps": {int(s): int(c) for s, c in zip(steps, counts)}, "bins": table}
