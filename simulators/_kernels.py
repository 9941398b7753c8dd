"""The numba kernel: every hot loop of the simulator, on plain arrays.

Private. Call it through ``simulators.process.Simulator``, which validates and
prepares the arrays. ``simulators.reference`` is the readable NumPy twin; a test
holds the two equal to the last bit for the same seed.

Random draws follow one fixed order, which the twin reproduces:

for each step:
    1. one batch-level normal per batch (kinds with ``normals > 0``);
    2. per bar, in bar order: the kind's ``normals`` normals;
    3. per bar, in bar order: the kind's ``uniforms`` uniforms;
    4. at an inspection, when ``obs`` is not empty: per batch, per sampled
       bar, per measured characteristic: one gauge normal.

Rollouts that only need the final state pass an empty ``obs`` and skip the
gauge draws; they are then not comparable draw-for-draw with a gauged run.

The number of draws never depends on the state or the plan, so two rollouts
with the same seed and different plans see the same noise (common random
numbers), which is what planners need to compare plans with low variance.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simulators._config import NJIT
from simulators.kinds import KIND_IDS, ROLES

# numba freezes module globals into constants.
FORMING = KIND_IDS["forming"]
DRAWING = KIND_IDS["drawing"]
STRAIGHTENING = KIND_IDS["straightening"]
HEAT_TREATMENT = KIND_IDS["heat_treatment"]
QUENCH = KIND_IDS["quench"]
TEMPER = KIND_IDS["temper"]
STRESS_RELIEF = KIND_IDS["stress_relief"]
GRINDING = KIND_IDS["grinding"]
POLISHING = KIND_IDS["polishing"]
PLATING = KIND_IDS["plating"]
BENDING = KIND_IDS["bending"]
REBEND = KIND_IDS["rebend"]
CUTTING = KIND_IDS["cutting"]
TRANSPORT = KIND_IDS["transport"]
WASHING = KIND_IDS["washing"]
INSPECTION = KIND_IDS["inspection"]

R_D = ROLES.index("diameter")
R_OV = ROLES.index("ovality")
R_ST = ROLES.index("straightness")
R_YS = ROLES.index("yield_strength")
R_RS = ROLES.index("residual_stress")
R_CT = ROLES.index("coating_thickness")
R_RA = ROLES.index("roughness")
R_LEN = ROLES.index("length")
R_CR = ROLES.index("crack")

GAS_CONSTANT = 8.314462618  # J/(mol K)



@njit(**NJIT)
def _normal(rng, noise, cursor):
    """Next standard normal: from ``rng``, or from pre-drawn ``noise`` when ``rng`` is None.

    numba prunes the branch that does not apply, so each caller compiles one path.
    Passing pre-drawn noise avoids unboxing a Generator, which costs about 12 us
    per call: too much for an env that calls the kernel once per step.
    """
    if rng is None:
        v = noise[cursor[0]]
        cursor[0] += 1
        return v
    return rng.standard_normal()


@njit(**NJIT)
def _uniform(rng, uniform, cursor):
    """Next uniform in [0, 1): from ``rng``, or from pre-drawn ``uniform``."""
    if rng is None:
        v = uniform[cursor[1]]
        cursor[1] += 1
        return v
    return rng.random()


@njit(**NJIT)
def springback_ratio(yield_strength: float, diameter: float, radius: float, modulus: float) -> float:
    """Elastic springback as a share of the commanded angle.

    Classical result for pure bending of an elastic-perfectly-plastic bar:
    ``r = 3x - 4x**3`` with ``x = R * sigma_y / (E * h)``, ``h`` the half-thickness.
    """
    x = radius * yield_strength / (modulus * 0.5 * diameter)
    return 3.0 * x - 4.0 * x * x * x


@njit(**NJIT)
def crack_probability(coating: float, critical: float, scale: float) -> float:
    """Chance that bending cracks a chrome layer of ``coating`` micrometres."""
    if coating <= 0.0:
        return 0.0
    return 1.0 / (1.0 + np.exp(-(coating - critical) / scale))


# One function of about 250 lines on purpose (the project's limit is 120): the
# step kinds are dispatched once per batch with the bar loop inside each branch,
# which numba compiles to tight loops; calls out to per-kind helpers would have
# to pass most of the 26 arrays each time. Its twin, reference.advance_reference,
# follows it branch for branch.
@njit(**NJIT)
def advance(state, bars_per_batch, start, stop, kind_id, normals, params, param_set, target, slot,
            lever_first, lever_count, lever_param, plan, fault, drift,
            insp_of_step, insp_measures, insp_sample, gauge_sigma,
            obs, latent, rng, noise, uniform, cursor):
    """Advance every bar from step ``start`` to ``stop`` (0-based, stop exclusive).

    ``state`` (n_batches * bars_per_batch, n_chars) is updated in place; bars of
    batch ``b`` are rows ``b * bars_per_batch ...``. ``obs`` (n_batches, n_insp,
    max_sample, n_chars) receives gauge readings; ``latent`` (n_batches,
    n_steps + 1, n_chars) receives batch means after each step when it is not
    empty.

    ``params`` (n_sets, n_steps, MAX_PARAMS) holds one or more sets of step
    parameters (physics) and ``param_set`` (n_batches,) says which set each
    batch runs with, so one call rolls out batches of different physics (the
    planner's rollouts under calibration draws, rl training on posterior
    variants). One set and ``param_set`` all zero is the process file.

    Random numbers come from ``rng``; when ``rng`` is None they are read from
    ``noise`` (normals) and ``uniform`` at positions ``cursor[0]`` and
    ``cursor[1]``, which advance (see ``draws_needed``).

    ``normals[s]`` is the number of bar-level normals step ``s`` draws per bar
    (an argument, not a module constant, so the on-disk cache never holds a
    stale copy of the kinds table).

    The step kind is dispatched once per batch, with the bar loop inside each
    branch, and everything that is constant over a batch's bars (Arrhenius
    factors, temper drop, straightening keep) is computed once per batch.
    """
    n_batches = plan.shape[0]
    n_chars = state.shape[1]
    record = latent.shape[0] > 0
    gauge = obs.shape[0] > 0
    jD = slot[R_D]
    jOV = slot[R_OV]
    jST = slot[R_ST]
    jYS = slot[R_YS]
    jRS = slot[R_RS]
    jCT = slot[R_CT]
    jRA = slot[R_RA]
    jLEN = slot[R_LEN]
    jCR = slot[R_CR]
    zb = np.empty(n_batches)
    p = np.empty(params.shape[2])
    # A batch's bar draws go to a buffer first, in the same order as drawing them
    # inside the physics loop would: a tight draw loop, then a loop without calls.
    buf = np.empty(bars_per_batch * max(4, n_chars))
    for s in range(start, stop):
        k = kind_id[s]
        t = target[s]
        if k != WASHING and k != INSPECTION:
            for b in range(n_batches):
                zb[b] = _normal(rng, noise, cursor)
        for b in range(n_batches):
            if k == WASHING or k == INSPECTION:
                break
            ps = param_set[b]
            for j in range(params.shape[2]):
                p[j] = params[ps, s, j]
            for li in range(lever_first[s], lever_first[s] + lever_count[s]):
                p[lever_param[li]] = plan[b, li]
            # Scalars, not p[k]: numba cannot hoist loads of an array that may alias state.
            p0, p1, p2, p3, p4 = p[0], p[1], p[2], p[3], p[4]
            p5, p6, p7, p8, p9 = p[5], p[6], p[7], p[8], p[9]
            eb = p1 * (zb[b] + drift[b, s])
            m = fault[b, s]
            i0 = b * bars_per_batch
            i1 = i0 + bars_per_batch
            nk = normals[s]
            for q in range(bars_per_batch * nk):
                buf[q] = _normal(rng, noise, cursor)
            if k == FORMING:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    e2 = buf[(i - i0) * nk + 1]
                    e3 = buf[(i - i0) * nk + 2]
                    for c in range(n_chars):
                        state[i, c] = 0.0
                    if jD >= 0:
                        state[i, jD] = p2 + eb + p0 * e1
                    if jOV >= 0:
                        state[i, jOV] = p3 + p4 * abs(e2)
                    if jST >= 0:
                        state[i, jST] = p5 + p6 * abs(e3)
                    if jYS >= 0:
                        state[i, jYS] = p7
                    if jRA >= 0:
                        state[i, jRA] = p8
                    if jLEN >= 0:
                        state[i, jLEN] = p9
            elif k == DRAWING:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    e2 = buf[(i - i0) * nk + 1]
                    if jD >= 0:
                        state[i, jD] = state[i, jD] - p2 + m + eb + p0 * e1
                    if jOV >= 0:
                        state[i, jOV] = state[i, jOV] * p3 + 0.5 * m + p4 * abs(e2)
                    if jYS >= 0:
                        state[i, jYS] += p5
                    if jRA >= 0:
                        state[i, jRA] *= p6
                    if jRS >= 0:
                        state[i, jRS] += p7
            elif k == STRAIGHTENING:
                keep = np.exp(-p2 * (1.0 - m) / p3)
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    bow = state[i, jST] - p4
                    if bow < 0.0:
                        bow = 0.0
                    state[i, jST] = p4 + bow * keep + m * p6 + abs(eb + p0 * e1)
                    if jRS >= 0:
                        state[i, jRS] += p5 * p2
            elif k == HEAT_TREATMENT:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    e2 = buf[(i - i0) * nk + 1]
                    state[i, jYS] = p2 + p3 * m + eb + p0 * e1
                    if jST >= 0:
                        state[i, jST] += (p4 + p5 * m) * abs(e2)
                    if jRS >= 0:
                        state[i, jRS] = p6
            elif k == QUENCH:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    state[i, jYS] += p2 * (1.0 - m) + eb + p0 * e1
                    if jRS >= 0:
                        state[i, jRS] += p3
            elif k == TEMPER:
                drop = p4 * np.exp((p2 - p3) / p5)
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    state[i, jYS] = state[i, jYS] - drop + eb + p0 * e1
                    if jRS >= 0:
                        state[i, jRS] *= p6
            elif k == STRESS_RELIEF:
                arr = np.exp(-p6 * 1000.0 / GAS_CONSTANT
                             * (1.0 / (p2 + 273.15) - 1.0 / (p5 + 273.15)))
                relax = np.exp(-p4 * arr * p3)
                soften = p7 * arr * p3
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    state[i, jRS] = state[i, jRS] * relax + eb + p0 * e1
                    if jYS >= 0:
                        state[i, jYS] -= soften
            elif k == GRINDING:
                # More stock removed rounds the bar more.
                round_keep = p4 ** ((p2 + p3) / p2)
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    e2 = buf[(i - i0) * nk + 1]
                    state[i, jD] = state[i, jD] - (p2 + p3) / 1000.0 + eb + p0 * e1
                    if jOV >= 0:
                        state[i, jOV] *= round_keep
                    if jRA >= 0:
                        state[i, jRA] = p5 + p6 * abs(e2)
                    if jRS >= 0:
                        state[i, jRS] += p7 * m
            elif k == POLISHING:
                n = p2 + p3
                keep = (1.0 - p5 * (1.0 - m)) ** n
                removed = p6 * n
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    excess = state[i, jRA] - p4
                    if excess < 0.0:
                        excess = 0.0
                    state[i, jRA] = p4 + excess * keep + abs(eb + p0 * e1)
                    if jD >= 0:
                        state[i, jD] -= 2.0 * removed / 1000.0
                    if jCT >= 0:
                        ct = state[i, jCT] - removed
                        state[i, jCT] = ct if ct > 0.0 else 0.0
            elif k == PLATING:
                g0 = p5 * p3 * p2 * p4 * (1.0 - m)
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    g = g0 * (1.0 + eb + p0 * e1)
                    if g < 0.0:
                        g = 0.0
                    state[i, jCT] += g
                    if jD >= 0:
                        state[i, jD] += 2.0 * g / 1000.0
                    if g > 0.0 and jRA >= 0:
                        state[i, jRA] += p6
            elif k == BENDING:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    d = state[i, jD]
                    r_ref = springback_ratio(p4, d, p5, p6)
                    r = springback_ratio(state[i, jYS], d, p5, p6)
                    command = p2 / (1.0 - r_ref) + p3
                    state[i, t] = command * (1.0 - r) + m + eb + p0 * e1
                    if jRS >= 0:
                        state[i, jRS] += p9
            elif k == REBEND:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    if p2 != 0.0:
                        r = springback_ratio(state[i, jYS], state[i, jD], p3, p4)
                        state[i, t] = state[i, t] + p2 * (1.0 - r) + p0 * e1
            elif k == CUTTING:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    state[i, jLEN] = p2 + eb + p0 * e1
            elif k == TRANSPORT:
                for i in range(i0, i1):
                    e1 = buf[(i - i0) * nk]
                    if jST >= 0:
                        state[i, jST] += abs(eb + p0 * e1)
        # Uniform draws come after all normals of the step (see module docstring).
        if k == GRINDING or k == BENDING or k == REBEND:
            for b in range(n_batches):
                m = fault[b, s]
                ps = param_set[b]
                for j in range(params.shape[2]):
                    p[j] = params[ps, s, j]
                for li in range(lever_first[s], lever_first[s] + lever_count[s]):
                    p[lever_param[li]] = plan[b, li]
                for q in range(bars_per_batch):
                    buf[q] = _uniform(rng, uniform, cursor)
                for i in range(b * bars_per_batch, (b + 1) * bars_per_batch):
                    u = buf[i - b * bars_per_batch]
                    ct = state[i, jCT] if jCT >= 0 else 0.0
                    if k == GRINDING:
                        hit = u < m
                    elif k == BENDING:
                        hit = u < crack_probability(ct, p[7], p[8])
                    else:
                        hit = p[2] != 0.0 and u < p[7] * crack_probability(ct, p[5], p[6])
                    if hit and jCR >= 0:
                        state[i, jCR] = 1.0
        if k == INSPECTION and gauge:
            q = insp_of_step[s]
            n_meas = 0
            for c in range(n_chars):
                if insp_measures[q, c]:
                    n_meas += 1
            for b in range(n_batches):
                for r in range(insp_sample[q] * n_meas):
                    buf[r] = _normal(rng, noise, cursor)
                r = 0
                for jj in range(insp_sample[q]):
                    i = b * bars_per_batch + jj
                    for c in range(n_chars):
                        if insp_measures[q, c]:
                            obs[b, q, jj, c] = state[i, c] + gauge_sigma[c] * buf[r]
                            r += 1
        if record:
            for b in range(n_batches):
                for c in range(n_chars):
                    acc = 0.0
                    for i in range(b * bars_per_batch, (b + 1) * bars_per_batch):
                        acc += state[i, c]
                    latent[b, s + 1, c] = acc / bars_per_batch


@njit(**NJIT)
def in_spec_fraction(state, bars_per_batch, lower, upper):
    """Share of each batch's bars inside every band (NaN bands are ignored)."""
    n_batches = state.shape[0] // bars_per_batch
    out = np.empty(n_batches)
    for b in range(n_batches):
        good = 0
        for i in range(b * bars_per_batch, (b + 1) * bars_per_batch):
            ok = True
            for c in range(state.shape[1]):
                v = state[i, c]
                if v < lower[c] or v > upper[c]:
                    ok = False
                    break
            if ok:
                good += 1
        out[b] = good / bars_per_batch
    return out


@njit(**NJIT)
def char_in_spec_fraction(state, bars_per_batch, lower, upper):
    """Share of each batch's bars inside each characteristic's band, (n_batches, n_chars)."""
    n_batches = state.shape[0] // bars_per_batch
    out = np.zeros((n_batches, state.shape[1]))
    for b in range(n_batches):
        for i in range(b * bars_per_batch, (b + 1) * bars_per_batch):
            for c in range(state.shape[1]):
                v = state[i, c]
                if not (v < lower[c] or v > upper[c]):
                    out[b, c] += 1.0
        for c in range(state.shape[1]):
            out[b, c] /= bars_per_batch
    return out


@njit(**NJIT)
def draws_needed(kind_id, normals, insp_of_step, insp_measures, insp_sample, n_batches, bars_per_batch,
                 start, stop, gauge=True):
    """(normals, uniforms) that ``advance`` draws for steps ``start .. stop - 1``.

    The count never depends on the state or the plan (see the module docstring).
    """
    n_norm = n_unif = 0
    for s in range(start, stop):
        k = kind_id[s]
        if k != WASHING and k != INSPECTION:
            n_norm += n_batches * (1 + bars_per_batch * normals[s])
        if k == GRINDING or k == BENDING or k == REBEND:
            n_unif += n_batches * bars_per_batch
        if k == INSPECTION and gauge:
            q = insp_of_step[s]
            n_meas = 0
            for c in range(insp_measures.shape[1]):
                if insp_measures[q, c]:
                    n_meas += 1
            n_norm += n_batches * insp_sample[q] * n_meas
    return n_norm, n_unif


# ---- the gymnasium env's kernels (simulators.env): observations and actions ----

@njit(**NJIT)
def env_fill(readings, q, c, sample, insp_step, nominal, width, pos, decision, n_steps, out):
    """The env's observation of one batch, written into ``out`` (see ``simulators.env``'s
    Observation Space): per (inspection, characteristic) pair the standardised sample
    mean clipped to [-50, 50] and a gauged flag, then the progress ``pos / n_steps``,
    then the one-hot decision (none when ``decision < 0``)."""
    n = q.shape[0]
    for i in range(n):
        acc = 0.0
        if insp_step[i] <= pos:
            for j in range(sample[i]):
                acc += readings[q[i], j, c[i]]
        # not gauged yet, or not in the readings given (NaN): unmeasured
        if insp_step[i] <= pos and np.isfinite(acc):
            v = (acc / sample[i] - nominal[i]) / width[i]
            out[i] = min(max(v, -50.0), 50.0)
            out[n + i] = 1.0
        else:
            out[i] = 0.0
            out[n + i] = 0.0
    out[2 * n] = pos / n_steps
    for k in range(2 * n + 1, out.shape[0]):
        out[k] = 0.0
    if decision >= 0:
        out[2 * n + 1 + decision] = 1.0


# Actions within this distance of 0 keep the lever at nominal.
DEAD_ZONE = 0.2


@njit(**NJIT)
def env_apply_action(action, idx, lo, span, integer, nominal, per_use, per_unit, plan_row):
    """Set the levers ``idx`` from actions in [-1, 1]; return their cost (currency)."""
    cost = 0.0
    for i in range(idx.shape[0]):
        j = idx[i]
        a = min(max(action[i], -1.0), 1.0)
        # a dead zone keeps the lever (a Gaussian policy never outputs exactly 0,
        # and every move pays the lever's cost per use); beyond it, piecewise
        # linear around nominal up to the bounds at -1 / +1
        if abs(a) <= DEAD_ZONE:
            a = 0.0
        else:
            a = (a - DEAD_ZONE) / (1.0 - DEAD_ZONE) if a > 0.0 else (a + DEAD_ZONE) / (1.0 - DEAD_ZONE)
        if a >= 0.0:
            v = nominal[j] + a * (lo[j] + span[j] - nominal[j])
        else:
            v = nominal[j] + a * (nominal[j] - lo[j])
        if integer[j]:
            v = np.round(v)
        plan_row[j] = v
        delta = abs(v - nominal[j])
        if delta > 1e-9:
            cost += per_use[j] + delta * per_unit[j]
    return cost


@njit(**NJIT)
def env_apply_actions(actions, moving, decision, table, lo, span, integer, nominal, per_use, per_unit, plan,
                   reward):
    """``env_apply_action`` for every moving env; ``table[d]`` lists decision d's levers (-1 padded)."""
    for m in range(moving.shape[0]):
        e = moving[m]
        row = table[decision[e]]
        n = 0
        while n < row.shape[0] and row[n] >= 0:
            n += 1
        reward[e] = -env_apply_action(actions[e], row[:n], lo, span, integer, nominal, per_use, per_unit, plan[e])


@njit(**NJIT)
def env_fill_many(readings, q, c, sample, insp_step, nominal, width, pos, decision, n_decisions, n_steps, out):
    """``env_fill`` for every env of a vector; a decision index past the last is none (-1)."""
    for e in range(out.shape[0]):
        d = decision[e] if decision[e] < n_decisions else -1
        env_fill(readings[e], q, c, sample, insp_step, nominal, width, pos[e], d, n_steps, out[e])
