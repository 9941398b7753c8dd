"""The whole process definition, :class:`Process`, and its rules (private;
import it from :mod:`simulators.definition`).

The rules every layer calls instead of writing them again live here as
methods: acceptance (:meth:`Process.accepts`), gate flags
(:meth:`Process.gate_flags`), the levers still free after a step
(:meth:`Process.free_levers`, :meth:`Process.levers_after`) and the lever
bounds (:meth:`Process.levers_ok`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

import numpy as np

from simulators._entries import (Characteristic, Economics, Factory, Fault, Gate, Inspection, Lever, Partner,
                                 ProcessDefinitionError, Step, UncertainParam)
from simulators.kinds import KINDS

if TYPE_CHECKING:
    from simulators._compiled import CompiledProcess

__all__ = ["Process"]


@dataclass(frozen=True)
class Process:
    """A whole process definition. Built by :func:`load_process`; immutable."""

    name: str
    version: str
    description: str
    bars_per_batch: int
    acceptance_level: float
    season_days: float
    partners: tuple[Partner, ...]
    factories: tuple[Factory, ...]
    characteristics: tuple[Characteristic, ...]
    steps: tuple[Step, ...]
    levers: tuple[Lever, ...]
    inspections: tuple[Inspection, ...]
    faults: tuple[Fault, ...]
    gates: tuple[Gate, ...]
    economics: Economics
    source: str = ""
    digest: str = field(default="", compare=False)
    #: The physics parameters a calibration may correct, resolved from the kinds'
    #: defaults and the steps' ``uncertain`` entries, in step order.
    uncertain: tuple[UncertainParam, ...] = ()

    # ---- lookups -------------------------------------------------------
    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def n_chars(self) -> int:
        return len(self.characteristics)

    @cached_property
    def char_index(self) -> Mapping[str, int]:
        return MappingProxyType({c.name: i for i, c in enumerate(self.characteristics)})

    @cached_property
    def lever_index(self) -> Mapping[str, int]:
        return MappingProxyType({lv.name: i for i, lv in enumerate(self.levers)})

    @cached_property
    def inspection_steps(self) -> tuple[int, ...]:
        return tuple(i.step for i in self.inspections)

    def step(self, index: int) -> Step:
        """Step by its 1-based index."""
        return self.steps[index - 1]

    def characteristic(self, name: str) -> Characteristic:
        return self.characteristics[self.char_index[name]]

    def lever(self, name: str) -> Lever:
        return self.levers[self.lever_index[name]]

    # ---- the process's rules (one place each; everyone calls these) ----
    def free_levers(self, after_step: int) -> np.ndarray:
        """Which levers can still be changed once step ``after_step`` is done:
        those at steps strictly after it. Bool mask, shape ``(n_levers,)``."""
        return np.array([lv.step > after_step for lv in self.levers], dtype=bool)

    def levers_after(self, step: int) -> tuple[Lever, ...]:
        """Levers at steps strictly after ``step`` (what can still be changed)."""
        return tuple(lv for lv, free in zip(self.levers, self.free_levers(step)) if free)

    def accepts(self, in_spec_fraction) -> np.ndarray:
        """The acceptance rule: a batch is accepted when the share of its bars
        inside every final band reaches ``acceptance_level``.

        The 1e-12 slack keeps a share of exactly ``k / bars_per_batch`` that
        meets the level from failing on its last binary digit.

        Parameters
        ----------
        in_spec_fraction : float or ndarray
            Share of bars in spec, in [0, 1].

        Returns
        -------
        ndarray of bool (same shape)
        """
        return np.asarray(in_spec_fraction) >= self.acceptance_level - 1e-12

    @property
    def bars_needed(self) -> int:
        """Fewest in-spec bars of a batch that :meth:`accepts` (the same rule, counted in bars)."""
        return int(math.ceil(self.acceptance_level * self.bars_per_batch - 1e-9))

    def gate_flags(self, step: int, sample_means: np.ndarray) -> np.ndarray:
        """The gate rule: an inspection flags a batch when any gauged sample mean
        lies outside its gate band (:meth:`gate_bands`).

        Takes what :meth:`gate_outside` takes (``sample_means (..., n_chars)``,
        NaN where not gauged); returns ``ndarray of bool (...)``, whether any
        characteristic is outside.
        """
        return self.gate_outside(step, sample_means).any(axis=-1)

    def gate_outside(self, step: int, sample_means: np.ndarray) -> np.ndarray:
        """The gate rule per characteristic: which sample means lie outside their
        gate band at inspection ``step`` (:meth:`gate_flags` is "any of these").

        Parameters
        ----------
        step : int
            The inspection step.
        sample_means : ndarray (..., n_chars)
            Sample means in the characteristics' units; NaN where not gauged
            (never outside a band).

        Returns
        -------
        ndarray of bool (..., n_chars)
        """
        lo, hi = self.gate_bands(step)
        with np.errstate(invalid="ignore"):
            return (sample_means < lo) | (sample_means > hi)

    def nominal_plan(self) -> np.ndarray:
        """Lever values when nobody intervenes, shape ``(n_levers,)``."""
        return np.array([lv.nominal for lv in self.levers], dtype=np.float64)

    def lever_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Effective (low, high) per lever: hard bounds within the maximum change."""
        return (np.array([lv.low for lv in self.levers]), np.array([lv.high for lv in self.levers]))

    def lever_cost(self, plan: np.ndarray) -> np.ndarray:
        """Cost of plans, shape ``(..., n_levers) -> (...)``, in currency."""
        plan = np.asarray(plan, dtype=np.float64)
        nominal = self.nominal_plan()
        per_use = np.array([lv.cost_per_use for lv in self.levers])
        per_unit = np.array([lv.cost_per_unit for lv in self.levers])
        delta = np.abs(plan - nominal)
        used = delta > 1e-9
        return (used * per_use + delta * per_unit).sum(axis=-1)

    def levers_ok(self, plan: np.ndarray, *, tol: float = 1e-9) -> np.ndarray:
        """Per lever: inside the hard bounds and maximum change, and whole if integer.
        Shape ``(..., n_levers)``."""
        lo, hi = self.lever_bounds()
        plan = np.asarray(plan, dtype=np.float64)
        ok = (plan >= lo - tol) & (plan <= hi + tol)
        ints = np.array([lv.integer for lv in self.levers], dtype=bool)
        return ok & (~ints | (np.abs(plan - np.round(plan)) < tol))

    def within_bounds(self, plan: np.ndarray, *, tol: float = 1e-9) -> np.ndarray:
        """Whether each plan respects every lever's hard bounds and maximum change."""
        return self.levers_ok(plan, tol=tol).all(axis=-1)

    def final_bands(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([c.lower for c in self.characteristics]),
                np.array([c.upper for c in self.characteristics]))

    def gate_bands(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Flagging band per characteristic at an inspection step; NaN where no gate.
        At the last inspection the final tolerance bands apply."""
        lo = np.full(self.n_chars, np.nan)
        hi = np.full(self.n_chars, np.nan)
        for g in self.gates:
            if g.step == step:
                i = self.char_index[g.characteristic]
                lo[i], hi[i] = g.lower, g.upper
        if step == self.n_steps:
            lo, hi = self.final_bands()
        return lo, hi

    def with_params(self, values: Mapping[tuple[int, str], float], *,
                    label: str = "") -> "Process":
        """A new process whose step parameters are replaced by ``values``.

        The structure (steps, characteristics, levers, inspections, faults) is
        unchanged; only the physics differs. This is how a calibration draw or a
        plant variant becomes something the simulator can run. The original is
        left as it is.

        Parameters
        ----------
        values : mapping of (step index, parameter name) -> value
            In the parameter's own unit (``simulators.kinds``). A lever's
            parameter cannot be replaced: its value comes from the plan.
        label : str, optional
            Appended to ``source`` to say where the values came from.

        Returns
        -------
        Process
            With a digest derived from this one's and the new values.

        Examples
        --------
        >>> p = load_process("small")
        >>> s = next(s for s in p.steps if s.kind == "quench")
        >>> q = p.with_params({(s.index, "gain"): 400.0})
        >>> q.step(s.index).params["gain"] == 400.0, q.digest != p.digest
        (True, True)
        >>> p.structure_difference(q) is None
        True
        """
        import dataclasses

        steps = list(self.steps)
        lever_params = {(lv.step, lv.sets) for lv in self.levers}
        for (index, name), value in values.items():
            if not 1 <= int(index) <= self.n_steps:
                raise ProcessDefinitionError(f"{self.source}: no step {index}")
            st = steps[int(index) - 1]
            if name not in KINDS[st.kind].params:
                raise ProcessDefinitionError(
                    f"{self.source}: step {index} ({st.name}, kind {st.kind}) has no "
                    f"parameter '{name}'")
            if (int(index), name) in lever_params:
                raise ProcessDefinitionError(
                    f"{self.source}: step {index} parameter '{name}' is set by a lever")
            params = dict(st.params)
            params[name] = float(value)
            steps[int(index) - 1] = dataclasses.replace(st, params=MappingProxyType(params))
        key = ";".join(f"{i}:{n}={float(v)!r}" for (i, n), v in sorted(values.items()))
        digest = hashlib.sha256(f"{self.digest}|{key}".encode()).hexdigest()[:16]
        return dataclasses.replace(self, steps=tuple(steps), digest=digest,
                                   source=self.source + (f" [{label}]" if label else ""))

    def structure_difference(self, other: "Process") -> str | None:
        """The first difference in structure between two processes, or ``None``.

        Structure is what step data can show: steps (index, name, kind, factory,
        partner, target), characteristics (name, unit, role), levers (name, step,
        parameter set, unit), inspections (step, what is measured, sample size),
        faults (name, step) and bars per batch. Physics parameters, tolerances,
        drifts, offsets, fault rates and economics may differ: a plant's data
        carry no physics, so a plant is described by a file of the same structure.

        Examples
        --------
        >>> load_process("small").structure_difference(load_process("small")) is None
        True
        """
        a, b = self, other

        def first(what, xs, ys, key):
            if len(xs) != len(ys):
                return f"{what}: {len(xs)} in {a.source}, {len(ys)} in {b.source}"
            for i, (x, y) in enumerate(zip(xs, ys)):
                kx, ky = key(x), key(y)
                if kx != ky:
                    return f"{what}[{i}]: {kx} in {a.source}, {ky} in {b.source}"
            return None

        if a.bars_per_batch != b.bars_per_batch:
            return (f"bars_per_batch: {a.bars_per_batch} in {a.source}, "
                    f"{b.bars_per_batch} in {b.source}")
        checks = (
            ("characteristics", a.characteristics, b.characteristics,
             lambda c: (c.name, c.unit, c.role)),
            ("steps", a.steps, b.steps,
             lambda s: (s.index, s.name, s.kind, s.factory, s.partner, s.target, s.produces,
                        s.acts_on)),
            ("levers", a.levers, b.levers, lambda lv: (lv.name, lv.step, lv.sets, lv.unit)),
            ("inspections", a.inspections, b.inspections,
             lambda i: (i.step, tuple(i.measures), i.sample)),
            ("faults", a.faults, b.faults, lambda f: (f.name, f.step)),
        )
        for what, xs, ys, key in checks:
            diff = first(what, xs, ys, key)
            if diff:
                return diff
        return None

    @cached_property
    def arrays(self) -> "CompiledProcess":
        """The process as contiguous arrays for the numba kernel (built once)."""
        from simulators._compiled import CompiledProcess  # the arrays module imports this one

        return CompiledProcess.build(self)
