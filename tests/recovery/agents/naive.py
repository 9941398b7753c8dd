"""Slow, obvious reference forms of the agents' array decisions (what they replaced).

The engineer's rule and the history reader as first written, one row and one
(inspection, characteristic) at a time; the tests hold the fast forms equal to these.
"""

import numpy as np


def readings_from_history(process, history) -> np.ndarray:
    a = process.arrays
    out = np.full((len(process.inspections), int(a.insp_sample.max()), process.n_chars), np.nan)
    m = history[history["kind"] == "measurement"]
    q_of = {s: q for q, s in enumerate(process.inspection_steps)}
    for step, var, bar, val in zip(m["step"], m["variable"].astype(str), m["bar_id"], m["value"]):
        q = q_of.get(int(step))
        c = process.char_index.get(var)
        if q is not None and c is not None and bar is not None and bar == bar and int(bar) < out.shape[1]:
            out[q, int(bar), c] = float(val)
    return out


def latest_means(process, readings, step):
    out = []
    with np.errstate(invalid="ignore"):
        for c in range(process.n_chars):
            for q in range(len(process.inspections) - 1, -1, -1):
                s = process.inspection_steps[q]
                x = readings[q, :, c]
                if s <= step and np.isfinite(x).any():
                    out.append((c, s, float(np.nanmean(x))))
                    break
    return sorted(out, key=lambda t: (t[1], t[0]))


def engineer_plan(process, expected, sens, threshold, readings, step, plan):
    p = process
    plan = np.asarray(plan, dtype=np.float64).copy()
    free = sorted(map(int, np.flatnonzero(p.free_levers(step))), key=lambda j: p.levers[j].step)
    lo, hi = p.lever_bounds()
    used = set()
    for c, at, mean in latest_means(p, readings, step):
        ch = p.characteristics[c]
        dev = mean - expected[at, c]
        width = ch.upper - ch.lower
        if width <= 0 or abs(dev) < threshold * width:
            continue
        for j in free:
            s = sens[j, c]
            if j in used or abs(s) * (hi[j] - lo[j]) < 0.1 * width:
                continue
            v = np.clip(p.levers[j].nominal - dev / s, lo[j], hi[j])
            plan[j] = np.round(v) if p.levers[j].integer else v
            used.add(j)
            break
    return plan


def rl_plan(agent, readings, step, plan):
    """The rl agent's plan as first written: one SB3 ``predict`` per decision step."""
    from simulators.env import _apply_action, action_of

    p = agent.policy.process
    plan = np.array(plan, dtype=np.float64)
    lo, hi = p.lever_bounds()
    ints = np.array([lv.integer for lv in p.levers])
    per_use = np.array([lv.cost_per_use for lv in p.levers])
    per_unit = np.array([lv.cost_per_unit for lv in p.levers])
    nom = p.nominal_plan()
    obs = np.zeros(agent.layout.size)
    steps = agent.layout.decision_steps
    base = (agent.base(readings, step, np.where(p.free_levers(step), nom, plan))
            if agent.base is not None else None)
    for d in np.flatnonzero(steps > step):
        agent.layout.fill(readings, int(steps[d] - 1), int(d), obs)
        x = obs
        if base is not None:
            ba = np.zeros(agent._k)
            for i, j in enumerate(agent._levers_at[d]):
                ba[i] = action_of(base[j], nom[j], lo[j], hi[j])
            x = np.concatenate([obs, ba])
        action, _ = agent.policy.model.predict(x.astype(np.float32), deterministic=True)
        action = np.asarray(action, dtype=np.float64)
        if base is not None:
            action = np.clip(action + ba, -1.0, 1.0)
        _apply_action(action, agent._levers_at[d], lo, hi - lo, ints, nom, per_use, per_unit, plan)
    return plan
