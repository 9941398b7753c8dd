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


@njit(**NJIT)
def _get(x, slot, role):
    j = slot[role]
    return x[j] if j >= 0 else 0.0


@njit(**NJIT)
def _set(x, slot, role, value):
    j = slot[role]
    if j >= 0:
        x[j] = value


@njit(**NJIT)
def advance(state, bars_per_batch, start, stop, kind, params, target, slot,
            lever_first, lever_count, lever_param, plan, fault, drift,
            insp_of_step, insp_measures, insp_sample, gauge_sigma,
            obs, latent, rng):
    """Advance every bar from step ``start`` to ``stop`` (0-based, stop exclusive).

    ``state`` (n_batches * bars_per_batch, n_chars) is updated in place; bars of
    batch ``b`` are rows ``b * bars_per_batch ...``. ``obs`` (n_batches, n_insp,
    max_sample, n_chars) receives gauge readings; ``latent`` (n_batches,
    n_steps + 1, n_chars) receives batch means after each step when it is not
    empty.
    """
    n_batches = plan.shape[0]
    n_chars = state.shape[1]
    record = latent.shape[0] > 0
    gauge = obs.shape[0] > 0
    zb = np.empty(n_batches)
    p = np.empty(params.shape[1])
    for s in range(start, stop):
        k = kind[s]
        if k != WASHING and k != INSPECTION:
            for b in range(n_batches):
                zb[b] = rng.standard_normal()
        for j in range(params.shape[1]):
            p[j] = params[s, j]
        for b in range(n_batches):
            if k == WASHING or k == INSPECTION:
                break
            # Every batch overwrites the same lever slots, so no reset is needed.
            for li in range(lever_first[s], lever_first[s] + lever_count[s]):
                p[lever_param[li]] = plan[b, li]
            eb = p[1] * (zb[b] + drift[b, s])
            m = fault[b, s]
            t = target[s]
            for i in range(b * bars_per_batch, (b + 1) * bars_per_batch):
                x = state[i]
                if k == FORMING:
                    e1 = rng.standard_normal()
                    e2 = rng.standard_normal()
                    e3 = rng.standard_normal()
                    for c in range(n_chars):
                        x[c] = 0.0
                    _set(x, slot, R_D, p[2] + eb + p[0] * e1)
                    _set(x, slot, R_OV, p[3] + p[4] * abs(e2))
                    _set(x, slot, R_ST, p[5] + p[6] * abs(e3))
                    _set(x, slot, R_YS, p[7])
                    _set(x, slot, R_RA, p[8])
                    _set(x, slot, R_LEN, p[9])
                elif k == DRAWING:
                    e1 = rng.standard_normal()
                    e2 = rng.standard_normal()
                    _set(x, slot, R_D, _get(x, slot, R_D) - p[2] + m + eb + p[0] * e1)
                    _set(x, slot, R_OV, _get(x, slot, R_OV) * p[3] + 0.5 * m + p[4] * abs(e2))
                    _set(x, slot, R_YS, _get(x, slot, R_YS) + p[5])
                    _set(x, slot, R_RA, _get(x, slot, R_RA) * p[6])
                    _set(x, slot, R_RS, _get(x, slot, R_RS) + p[7])
                elif k == STRAIGHTENING:
                    e1 = rng.standard_normal()
                    bow = _get(x, slot, R_ST) - p[4]
                    if bow < 0.0:
                        bow = 0.0
                    keep = np.exp(-p[2] * (1.0 - m) / p[3])
                    _set(x, slot, R_ST, p[4] + bow * keep + m * p[6] + abs(eb + p[0] * e1))
                    _set(x, slot, R_RS, _get(x, slot, R_RS) + p[5] * p[2])
                elif k == HEAT_TREATMENT:
                    e1 = rng.standard_normal()
                    e2 = rng.standard_normal()
                    _set(x, slot, R_YS, p[2] + p[3] * m + eb + p[0] * e1)
                    _set(x, slot, R_ST, _get(x, slot, R_ST) + (p[4] + p[5] * m) * abs(e2))
                    _set(x, slot, R_RS, p[6])
                elif k == QUENCH:
                    e1 = rng.standard_normal()
                    _set(x, slot, R_YS, _get(x, slot, R_YS) + p[2] * (1.0 - m) + eb + p[0] * e1)
                    _set(x, slot, R_RS, _get(x, slot, R_RS) + p[3])
                elif k == TEMPER:
                    e1 = rng.standard_normal()
                    drop = p[4] * np.exp((p[2] - p[3]) / p[5])
                    _set(x, slot, R_YS, _get(x, slot, R_YS) - drop + eb + p[0] * e1)
                    _set(x, slot, R_RS, _get(x, slot, R_RS) * p[6])
                elif k == STRESS_RELIEF:
                    e1 = rng.standard_normal()
                    arr = np.exp(-p[6] * 1000.0 / GAS_CONSTANT
                                 * (1.0 / (p[2] + 273.15) - 1.0 / (p[5] + 273.15)))
                    _set(x, slot, R_RS, _get(x, slot, R_RS) * np.exp(-p[4] * arr * p[3])
                         + eb + p[0] * e1)
                    _set(x, slot, R_YS, _get(x, slot, R_YS) - p[7] * arr * p[3])
                elif k == GRINDING:
                    e1 = rng.standard_normal()
                    e2 = rng.standard_normal()
                    _set(x, slot, R_D, _get(x, slot, R_D) - (p[2] + p[3]) / 1000.0 + eb + p[0] * e1)
                    # More stock removed rounds the bar more.
                    _set(x, slot, R_OV, _get(x, slot, R_OV) * p[4] ** ((p[2] + p[3]) / p[2]))
                    _set(x, slot, R_RA, p[5] + p[6] * abs(e2))
                    _set(x, slot, R_RS, _get(x, slot, R_RS) + p[7] * m)
                elif k == POLISHING:
                    e1 = rng.standard_normal()
                    n = p[2] + p[3]
                    ra = _get(x, slot, R_RA)
                    excess = ra - p[4]
                    if excess < 0.0:
                        excess = 0.0
                    _set(x, slot, R_RA, p[4] + excess * (1.0 - p[5] * (1.0 - m)) ** n
                         + abs(eb + p[0] * e1))
                    removed = p[6] * n
                    _set(x, slot, R_D, _get(x, slot, R_D) - 2.0 * removed / 1000.0)
                    ct = _get(x, slot, R_CT) - removed
                    _set(x, slot, R_CT, ct if ct > 0.0 else 0.0)
                elif k == PLATING:
                    e1 = rng.standard_normal()
                    g = p[5] * p[3] * p[2] * p[4] * (1.0 - m) * (1.0 + eb + p[0] * e1)
                    if g < 0.0:
                        g = 0.0
                    _set(x, slot, R_CT, _get(x, slot, R_CT) + g)
                    _set(x, slot, R_D, _get(x, slot, R_D) + 2.0 * g / 1000.0)
                    if g > 0.0:
                        _set(x, slot, R_RA, _get(x, slot, R_RA) + p[6])
                elif k == BENDING:
                    e1 = rng.standard_normal()
                    d = _get(x, slot, R_D)
                    r_ref = springback_ratio(p[4], d, p[5], p[6])
                    r = springback_ratio(_get(x, slot, R_YS), d, p[5], p[6])
                    command = p[2] / (1.0 - r_ref) + p[3]
                    x[t] = command * (1.0 - r) + m + eb + p[0] * e1
                    _set(x, slot, R_RS, _get(x, slot, R_RS) + p[9])
                elif k == REBEND:
                    e1 = rng.standard_normal()
                    if p[2] != 0.0:
                        r = springback_ratio(_get(x, slot, R_YS), _get(x, slot, R_D), p[3], p[4])
                        x[t] = x[t] + p[2] * (1.0 - r) + p[0] * e1
                elif k == CUTTING:
                    e1 = rng.standard_normal()
                    _set(x, slot, R_LEN, p[2] + eb + p[0] * e1)
                elif k == TRANSPORT:
                    e1 = rng.standard_normal()
                    _set(x, slot, R_ST, _get(x, slot, R_ST) + abs(eb + p[0] * e1))
        # Uniform draws come after all normals of the step (see module docstring).
        if k == GRINDING or k == BENDING or k == REBEND:
            for b in range(n_batches):
                m = fault[b, s]
                for li in range(lever_first[s], lever_first[s] + lever_count[s]):
                    p[lever_param[li]] = plan[b, li]
                for i in range(b * bars_per_batch, (b + 1) * bars_per_batch):
                    u = rng.random()
                    x = state[i]
                    if k == GRINDING:
                        hit = u < m
                    elif k == BENDING:
                        hit = u < crack_probability(_get(x, slot, R_CT), p[7], p[8])
                    else:
                        hit = p[2] != 0.0 and u < p[7] * crack_probability(_get(x, slot, R_CT), p[5], p[6])
                    if hit:
                        _set(x, slot, R_CR, 1.0)
        if k == INSPECTION and gauge:
            q = insp_of_step[s]
            for b in range(n_batches):
                for jj in range(insp_sample[q]):
                    i = b * bars_per_batch + jj
                    for c in range(n_chars):
                        if insp_measures[q, c]:
                            obs[b, q, jj, c] = state[i, c] + gauge_sigma[c] * rng.standard_normal()
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
