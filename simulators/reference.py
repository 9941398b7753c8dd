"""Readable NumPy twins of ``simulators._kernels``: ``advance`` and the env's kernels.

Slow and obvious: one step at a time, vectorised over bars. It draws random
numbers in exactly the kernel's order (see the kernel's module docstring), so
for the same seed both return the same numbers; ``tests/simulators/test_kernels.py``
holds them equal. Change the physics here and in the kernel together.

The env's twins (``env_*_reference``) take the same arrays as their kernels;
they sum in NumPy's order, so they match to about one ulp
(``tests/simulators/test_env_kernels.py``).
"""

from __future__ import annotations

import numpy as np

from simulators.kinds import KIND_IDS, ROLES

__all__ = ["advance_reference", "env_fill_reference", "env_fill_many_reference",
           "env_apply_action_reference", "env_apply_actions_reference"]

_K = {name: i for name, i in KIND_IDS.items()}
_R = {name: i for i, name in enumerate(ROLES)}
GAS_CONSTANT = 8.314462618


def _springback_ratio(ys, d, radius, modulus):
    x = radius * ys / (modulus * 0.5 * d)
    return 3.0 * x - 4.0 * x**3


def _crack_probability(coating, critical, scale):
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-(coating - critical) / scale))
    return np.where(coating > 0.0, p, 0.0)


def advance_reference(state, bars_per_batch, start, stop, arrays, plan, fault, drift,
                      obs, latent, rng, params=None, param_set=None):
    """Same contract as the kernel's ``advance``; ``arrays`` is a ``CompiledProcess``.

    One long function on purpose (about 150 lines, over the project's 120): it
    mirrors the kernel's ``advance`` branch for branch, in the kernel's order of
    random draws, so the two can be read side by side; split into helpers, the
    twin would no longer read like the kernel it checks.

    ``params`` (n_sets, n_steps, MAX_PARAMS) and ``param_set`` (n_batches,) give
    each batch its own physics, as in the kernel; default: the file's, for all.
    """
    n_batches = plan.shape[0]
    if params is None:
        params, param_set = arrays.params[None], np.zeros(n_batches, dtype=np.int64)
    slot = arrays.slot

    def col(role):
        j = slot[_R[role]]
        return j if j >= 0 else None

    def get(role):
        j = col(role)
        return state[:, j] if j is not None else np.zeros(state.shape[0])

    def put(role, value):
        j = col(role)
        if j is not None:
            state[:, j] = value

    def per_bar(a):
        return np.repeat(a, bars_per_batch)

    for s in range(start, stop):
        k = arrays.kind_id[s]
        if k in (_K["washing"], _K["inspection"]):
            zb = None
        else:
            zb = rng.standard_normal(n_batches)
        # Parameters per batch: the step's defaults with this batch's lever values.
        P = params[param_set, s].copy()
        first, count = arrays.lever_first[s], arrays.lever_count[s]
        for li in range(first, first + count):
            P[:, arrays.lever_param[li]] = plan[:, li]
        p = [per_bar(P[:, j]) for j in range(P.shape[1])]
        m = per_bar(fault[:, s])
        eb = per_bar(P[:, 1] * (zb + drift[:, s])) if zb is not None else None
        t = arrays.target[s]

        if k == _K["forming"]:
            e = rng.standard_normal((state.shape[0], 3))
            state[:] = 0.0
            put("diameter", p[2] + eb + p[0] * e[:, 0])
            put("ovality", p[3] + p[4] * np.abs(e[:, 1]))
            put("straightness", p[5] + p[6] * np.abs(e[:, 2]))
            put("yield_strength", p[7])
            put("roughness", p[8])
            put("length", p[9])
        elif k == _K["drawing"]:
            e = rng.standard_normal((state.shape[0], 2))
            put("diameter", get("diameter") - p[2] + m + eb + p[0] * e[:, 0])
            put("ovality", get("ovality") * p[3] + 0.5 * m + p[4] * np.abs(e[:, 1]))
            put("yield_strength", get("yield_strength") + p[5])
            put("roughness", get("roughness") * p[6])
            put("residual_stress", get("residual_stress") + p[7])
        elif k == _K["straightening"]:
            e = rng.standard_normal(state.shape[0])
            bow = np.maximum(get("straightness") - p[4], 0.0)
            keep = np.exp(-p[2] * (1.0 - m) / p[3])
            put("straightness", p[4] + bow * keep + m * p[6] + np.abs(eb + p[0] * e))
            put("residual_stress", get("residual_stress") + p[5] * p[2])
        elif k == _K["heat_treatment"]:
            e = rng.standard_normal((state.shape[0], 2))
            put("yield_strength", p[2] + p[3] * m + eb + p[0] * e[:, 0])
            put("straightness", get("straightness") + (p[4] + p[5] * m) * np.abs(e[:, 1]))
            put("residual_stress", p[6])
        elif k == _K["quench"]:
            e = rng.standard_normal(state.shape[0])
            put("yield_strength", get("yield_strength") + p[2] * (1.0 - m) + eb + p[0] * e)
            put("residual_stress", get("residual_stress") + p[3])
        elif k == _K["temper"]:
            e = rng.standard_normal(state.shape[0])
            drop = p[4] * np.exp((p[2] - p[3]) / p[5])
            put("yield_strength", get("yield_strength") - drop + eb + p[0] * e)
            put("residual_stress", get("residual_stress") * p[6])
        elif k == _K["stress_relief"]:
            e = rng.standard_normal(state.shape[0])
            arr = np.exp(-p[6] * 1000.0 / GAS_CONSTANT
                         * (1.0 / (p[2] + 273.15) - 1.0 / (p[5] + 273.15)))
            put("residual_stress", get("residual_stress") * np.exp(-p[4] * arr * p[3]) + eb + p[0] * e)
            put("yield_strength", get("yield_strength") - p[7] * arr * p[3])
        elif k == _K["grinding"]:
            e = rng.standard_normal((state.shape[0], 2))
            put("diameter", get("diameter") - (p[2] + p[3]) / 1000.0 + eb + p[0] * e[:, 0])
            put("ovality", get("ovality") * p[4] ** ((p[2] + p[3]) / p[2]))
            put("roughness", p[5] + p[6] * np.abs(e[:, 1]))
            put("residual_stress", get("residual_stress") + p[7] * m)
            u = rng.random(state.shape[0])
            put("crack", np.where(u < m, 1.0, get("crack")))
        elif k == _K["polishing"]:
            e = rng.standard_normal(state.shape[0])
            n = p[2] + p[3]
            excess = np.maximum(get("roughness") - p[4], 0.0)
            put("roughness", p[4] + excess * (1.0 - p[5] * (1.0 - m)) ** n + np.abs(eb + p[0] * e))
            removed = p[6] * n
            put("diameter", get("diameter") - 2.0 * removed / 1000.0)
            put("coating_thickness", np.maximum(get("coating_thickness") - removed, 0.0))
        elif k == _K["plating"]:
            e = rng.standard_normal(state.shape[0])
            g = np.maximum(p[5] * p[3] * p[2] * p[4] * (1.0 - m) * (1.0 + eb + p[0] * e), 0.0)
            put("coating_thickness", get("coating_thickness") + g)
            put("diameter", get("diameter") + 2.0 * g / 1000.0)
            put("roughness", np.where(g > 0.0, get("roughness") + p[6], get("roughness")))
        elif k == _K["bending"]:
            e = rng.standard_normal(state.shape[0])
            d = get("diameter")
            r_ref = _springback_ratio(p[4], d, p[5], p[6])
            r = _springback_ratio(get("yield_strength"), d, p[5], p[6])
            command = p[2] / (1.0 - r_ref) + p[3]
            state[:, t] = command * (1.0 - r) + m + eb + p[0] * e
            put("residual_stress", get("residual_stress") + p[9])
            u = rng.random(state.shape[0])
            hit = u < _crack_probability(get("coating_thickness"), p[7], p[8])
            put("crack", np.where(hit, 1.0, get("crack")))
        elif k == _K["rebend"]:
            e = rng.standard_normal(state.shape[0])
            active = p[2] != 0.0
            r = _springback_ratio(get("yield_strength"), get("diameter"), p[3], p[4])
            state[:, t] = np.where(active, state[:, t] + p[2] * (1.0 - r) + p[0] * e, state[:, t])
            u = rng.random(state.shape[0])
            hit = active & (u < p[7] * _crack_probability(get("coating_thickness"), p[5], p[6]))
            put("crack", np.where(hit, 1.0, get("crack")))
        elif k == _K["cutting"]:
            e = rng.standard_normal(state.shape[0])
            put("length", p[2] + eb + p[0] * e)
        elif k == _K["transport"]:
            e = rng.standard_normal(state.shape[0])
            put("straightness", get("straightness") + np.abs(eb + p[0] * e))
        elif k == _K["inspection"] and obs.shape[0] > 0:
            q = arrays.insp_of_step[s]
            n_sample = arrays.insp_sample[q]
            cols = np.flatnonzero(arrays.insp_measures[q])
            g = rng.standard_normal((n_batches, n_sample, len(cols)))
            bars = state.reshape(n_batches, bars_per_batch, -1)[:, :n_sample, :][:, :, cols]
            # basic indexing first (a view), then the column selection writes through it
            view = obs[:, q, :n_sample, :]
            view[..., cols] = bars + arrays.gauge_sigma[cols] * g
        if latent.shape[0] > 0:
            latent[:, s + 1, :] = state.reshape(n_batches, bars_per_batch, -1).mean(axis=1)


# ---- twins of the env's kernels (simulators._kernels.env_*) ----

def env_fill_reference(readings, q, c, sample, insp_step, nominal, width, pos, decision, n_steps, out):
    """Twin of ``_kernels.env_fill``: the env's observation of one batch into ``out``."""
    n = q.shape[0]
    out[:] = 0.0
    for i in range(n):
        if insp_step[i] > pos:
            continue                    # not gauged yet
        mean = readings[q[i], :sample[i], c[i]].sum() / sample[i]
        if np.isfinite(mean):           # a NaN reading: not in the readings given
            out[i] = np.clip((mean - nominal[i]) / width[i], -50.0, 50.0)
            out[n + i] = 1.0
    out[2 * n] = pos / n_steps
    if decision >= 0:
        out[2 * n + 1 + decision] = 1.0
    return out


def env_fill_many_reference(readings, q, c, sample, insp_step, nominal, width, pos, decision, n_decisions,
                            n_steps, out):
    """Twin of ``_kernels.env_fill_many``: one observation per env."""
    for e in range(out.shape[0]):
        d = decision[e] if decision[e] < n_decisions else -1
        env_fill_reference(readings[e], q, c, sample, insp_step, nominal, width, pos[e], d, n_steps, out[e])
    return out


def env_apply_action_reference(action, idx, lo, span, integer, nominal, per_use, per_unit, plan_row):
    """Twin of ``_kernels.env_apply_action``: set levers ``idx`` in ``plan_row``, return the cost."""
    from simulators._kernels import DEAD_ZONE

    idx = np.asarray(idx, dtype=np.int64)
    a = np.clip(np.asarray(action, dtype=np.float64)[: len(idx)], -1.0, 1.0)
    # outside the dead zone, stretch |a| from (DEAD_ZONE, 1] back onto (0, 1]
    a = np.where(np.abs(a) <= DEAD_ZONE, 0.0, np.sign(a) * (np.abs(a) - DEAD_ZONE) / (1.0 - DEAD_ZONE))
    nom, low, high = nominal[idx], lo[idx], lo[idx] + span[idx]
    v = np.where(a >= 0.0, nom + a * (high - nom), nom + a * (nom - low))
    v = np.where(integer[idx], np.round(v), v)
    plan_row[idx] = v
    delta = np.abs(v - nom)
    moved = delta > 1e-9
    return float(np.sum(np.where(moved, per_use[idx] + delta * per_unit[idx], 0.0)))  # equal to ~1 ulp


def env_apply_actions_reference(actions, moving, decision, table, lo, span, integer, nominal, per_use,
                                per_unit, plan, reward):
    """Twin of ``_kernels.env_apply_actions``; ``table[d]`` lists decision d's levers (-1 padded)."""
    for e in moving:
        row = table[decision[e]]
        idx = row[: int(np.argmax(row < 0)) if (row < 0).any() else len(row)]
        reward[e] = -env_apply_action_reference(actions[e], idx, lo, span, integer, nominal, per_use,
                                                per_unit, plan[e])
    return reward
