"""The process as plain contiguous arrays for the numba kernel (private;
import :class:`CompiledProcess` from :mod:`simulators.definition`, or take
``Process.arrays``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simulators.kinds import KIND_IDS, KINDS, MAX_PARAMS, ROLES

if TYPE_CHECKING:
    from simulators._process_def import Process

__all__ = ["CompiledProcess"]


@dataclass(frozen=True)
class CompiledProcess:
    """The process as plain contiguous arrays for the numba kernel.

    Steps are 0-based here (``step index - 1``).
    """

    kind_id: np.ndarray         # (n_steps,) int64, the step kind's id (``simulators.kinds.KIND_IDS``)
    normals: np.ndarray         # (n_steps,) int64, bar-level normal draws per bar
    params: np.ndarray          # (n_steps, MAX_PARAMS) float64
    target: np.ndarray          # (n_steps,) int64, characteristic column or -1
    slot: np.ndarray            # (len(ROLES),) int64, column of each role or -1
    lever_first: np.ndarray     # (n_steps,) int64, first lever index at the step
    lever_count: np.ndarray     # (n_steps,) int64
    lever_param: np.ndarray     # (n_levers,) int64, kernel position of the parameter set
    insp_of_step: np.ndarray    # (n_steps,) int64, inspection number or -1
    insp_measures: np.ndarray   # (n_insp, n_chars) bool
    insp_sample: np.ndarray     # (n_insp,) int64
    gauge_sigma: np.ndarray     # (n_chars,) float64
    partner_offset: np.ndarray  # (n_steps,) float64
    factory_drift: np.ndarray   # (n_steps,) float64, per 100 days
    fault_step: np.ndarray      # (n_faults,) int64, 0-based

    @classmethod
    def build(cls, p: Process) -> "CompiledProcess":
        n = p.n_steps
        kind_id = np.array([KIND_IDS[s.kind] for s in p.steps], dtype=np.int64)
        params = np.zeros((n, MAX_PARAMS))
        for s in p.steps:
            spec = KINDS[s.kind]
            for j, name in enumerate(spec.params):
                params[s.index - 1, j] = s.params[name]
        for lv in p.levers:  # the nominal lever value is the step's parameter
            params[lv.step - 1, KINDS[p.step(lv.step).kind].index(lv.sets)] = lv.nominal
        target = np.array([p.char_index[s.target] if s.target else -1 for s in p.steps],
                          dtype=np.int64)
        slot = np.full(len(ROLES), -1, dtype=np.int64)
        for i, c in enumerate(p.characteristics):
            if c.role != "other" and slot[ROLES.index(c.role)] < 0:
                slot[ROLES.index(c.role)] = i
        lever_first = np.zeros(n, dtype=np.int64)
        lever_count = np.zeros(n, dtype=np.int64)
        for i, lv in enumerate(p.levers):
            if lever_count[lv.step - 1] == 0:
                lever_first[lv.step - 1] = i
            lever_count[lv.step - 1] += 1
        lever_param = np.array([KINDS[p.step(lv.step).kind].index(lv.sets) for lv in p.levers],
                               dtype=np.int64)
        insp_of_step = np.full(n, -1, dtype=np.int64)
        measures = np.zeros((len(p.inspections), p.n_chars), dtype=np.bool_)
        for k, ins in enumerate(p.inspections):
            insp_of_step[ins.step - 1] = k
            for m in ins.measures:
                measures[k, p.char_index[m]] = True
        partners = {pt.id: pt for pt in p.partners}
        factories = {f.id: f for f in p.factories}
        return cls(
            kind_id=kind_id, normals=np.array([KINDS[s.kind].normals for s in p.steps], dtype=np.int64),
            params=params, target=target, slot=slot,
            lever_first=lever_first, lever_count=lever_count,
            lever_param=lever_param if len(lever_param) else np.zeros(0, dtype=np.int64),
            insp_of_step=insp_of_step, insp_measures=measures,
            insp_sample=np.array([i.sample for i in p.inspections], dtype=np.int64),
            gauge_sigma=np.array([c.gauge_sigma for c in p.characteristics]),
            partner_offset=np.array([partners[s.partner].offset for s in p.steps]),
            factory_drift=np.array([factories[s.factory].drift for s in p.steps]),
            fault_step=np.array([f.step - 1 for f in p.faults], dtype=np.int64),
        )
