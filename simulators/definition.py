"""Process definition: a TOML process file loaded into frozen, typed dataclasses.

The file format is documented in ``docs/process-format.md``. ``load_process()``
with no argument loads the built-in 50-step chromed seat-bar process;
``load_process("small")`` loads the 12-step process the tests use; any other
value is a path.

Every error names the file and the offending entry, e.g.
``small.toml: steps[3] (step 4): unknown kind 'quenchh'``.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from simulators.kinds import KIND_IDS, KINDS, MAX_PARAMS, ROLES
from simulators.stations import check_production, station_fields

__all__ = [
    "Characteristic", "Gate", "Partner", "Factory", "Step", "Lever", "Inspection",
    "Fault", "Economics", "Process", "ProcessDefinitionError", "load_process",
    "BUILTIN_PROCESSES", "Prior", "UncertainParam", "parse_prior",
]

BUILTIN_PROCESSES = {"default": "default.toml", "small": "small.toml"}


def decision_step_count(name: str = "default") -> int:
    """Number of distinct lever steps of a built-in process (an episode's
    decisions), read from its file without validating it.

    For registering the gymnasium env on ``import simulators``: a full
    :func:`load_process` builds the unit registry first (about 2 s).
    """
    text = resources.files("simulators.processes").joinpath(BUILTIN_PROCESSES[name]).read_text("utf-8")
    return len({int(lv["step"]) for lv in tomllib.loads(text).get("levers", [])})


class ProcessDefinitionError(ValueError):
    """A process file is malformed; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Characteristic:
    """A quality characteristic of a bar.

    Attributes
    ----------
    name : str
        Variable name in step data.
    unit : str
        SI unit (pint syntax), e.g. ``mm``, ``MPa``, ``um``.
    role : str
        What the physics treats it as (see ``simulators.kinds.ROLES``).
    nominal : float
        Target value at the end of the process, in ``unit``.
    lower, upper : float
        Final tolerance band, in ``unit``.
    gauge_sigma : float
        Standard deviation of the gauge's error, in ``unit``.
    description : str
        Free text.
    """

    name: str
    unit: str
    role: str
    nominal: float
    lower: float
    upper: float
    gauge_sigma: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class Gate:
    """An intermediate acceptance band: a batch whose sample mean of
    ``characteristic`` at inspection ``step`` falls outside is flagged."""

    step: int
    characteristic: str
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class Partner:
    """A just-in-time partner. ``offset`` shifts every step it runs, in units
    of the step's batch-level sigma."""

    id: str
    name: str
    offset: float = 0.0


@dataclass(frozen=True, slots=True)
class Factory:
    """A factory of a partner. ``drift`` is the shift of every step run there
    per 100 days of production, in units of the step's batch-level sigma."""

    id: str
    partner: str
    name: str = ""
    drift: float = 0.0


@dataclass(frozen=True, slots=True)
class Step:
    """One process step (1-based ``index``).

    ``produces`` and ``acts_on`` are the characteristics a ``station`` step makes
    and changes (``simulators.stations``); empty for the physics kinds.
    """

    index: int
    name: str
    kind: str
    factory: str
    partner: str
    params: Mapping[str, float]
    target: str | None = None
    produces: tuple[str, ...] = ()
    acts_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lever:
    """A corrective set point at one step.

    Attributes
    ----------
    name : str
        Lever name in step data and plans.
    step : int
        Step it acts at.
    sets : str
        The step kind's parameter it sets.
    unit : str
        Physical unit of the value.
    nominal : float
        Value used when nobody intervenes.
    lower, upper : float
        Hard physical bounds.
    max_change : float
        Largest allowed ``|value - nominal|``.
    cost_per_use : float
        Cost charged once when the value differs from nominal (currency).
    cost_per_unit : float
        Extra cost per unit of ``|value - nominal|`` (currency / unit).
    integer : bool
        Whether only whole values are physical (e.g. polishing passes).
    description : str
        Free text.
    """

    name: str
    step: int
    sets: str
    unit: str
    nominal: float
    lower: float
    upper: float
    max_change: float
    cost_per_use: float
    cost_per_unit: float = 0.0
    integer: bool = False
    description: str = ""

    @property
    def low(self) -> float:
        """Effective lower limit: hard bound and maximum change together."""
        return max(self.lower, self.nominal - self.max_change)

    @property
    def high(self) -> float:
        """Effective upper limit: hard bound and maximum change together."""
        return min(self.upper, self.nominal + self.max_change)


@dataclass(frozen=True, slots=True)
class Inspection:
    """Gauges at one step: which characteristics, on how many bars per batch."""

    step: int
    measures: tuple[str, ...]
    sample: int


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault type of the catalogue.

    ``magnitude`` is drawn uniformly in ``[low, high]``; with ``symmetric`` the
    sign is random. Its meaning is the channel of the step's kind
    (``simulators.kinds``) in ``unit``.
    """

    name: str
    step: int
    rate: float
    low: float
    high: float
    unit: str
    symmetric: bool = False
    recoverable: str = "yes"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Prior:
    """A prior on a step parameter, relative to the value in the file.

    The parameter is ``file_value * factor``; the prior is on the factor, so one
    prior string fits parameters of any unit and size:

    * ``lognormal(mu, sigma)``: ``log(factor) ~ Normal(mu, sigma)``; ``mu = 0``
      centres the prior on the file's value, ``sigma = 0.3`` puts 94% of it
      within about x0.57 .. x1.76;
    * ``uniform(low, high)``: ``factor ~ Uniform(low, high)``, ``0 < low < high``.

    Attributes
    ----------
    dist : str
        ``"lognormal"`` or ``"uniform"``.
    a, b : float
        ``(mu, sigma)`` or ``(low, high)``.
    """

    dist: str
    a: float
    b: float

    def __str__(self) -> str:
        return f"{self.dist}({self.a:g}, {self.b:g})"

    def sample_log_factor(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws of ``log(factor)``."""
        if self.dist == "lognormal":
            return rng.normal(self.a, self.b, n)
        return np.log(rng.uniform(self.a, self.b, n))

    def log_factor_range(self, width: float = 3.0) -> tuple[float, float]:
        """A range of ``log(factor)`` holding the prior's mass: ``mu +- width sigma``
        for a log-normal, the bounds for a uniform."""
        if self.dist == "lognormal":
            return self.a - width * self.b, self.a + width * self.b
        return float(np.log(self.a)), float(np.log(self.b))

    def log_factor_sd(self) -> float:
        """Standard deviation of ``log(factor)`` under the prior."""
        if self.dist == "lognormal":
            return self.b
        # log of a uniform factor, by the midpoint rule (smooth integrand, no closed form needed).
        f = self.a + (np.arange(4000) + 0.5) / 4000 * (self.b - self.a)
        return float(np.log(f).std())


_PRIOR_FORMS = "'lognormal(mu, sigma)' with sigma > 0 or 'uniform(low, high)' with 0 < low < high"


def parse_prior(text: str) -> Prior:
    """Parse a prior string (see :class:`Prior`).

    Raises
    ------
    ValueError
        If ``text`` is not one of the known forms; the message lists them.

    Examples
    --------
    >>> parse_prior("lognormal(0, 0.3)")
    Prior(dist='lognormal', a=0.0, b=0.3)
    """
    import re

    m = re.fullmatch(r"\s*(\w+)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*", str(text))
    if not m or m.group(1) not in ("lognormal", "uniform"):
        raise ValueError(f"cannot parse prior {text!r}; expected {_PRIOR_FORMS}")
    try:
        a, b = float(m.group(2)), float(m.group(3))
    except ValueError:
        raise ValueError(f"cannot parse prior {text!r}: its arguments must be numbers") from None
    if not (np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"prior {text!r}: arguments must be finite")
    if m.group(1) == "lognormal" and b <= 0:
        raise ValueError(f"prior {text!r}: sigma must be > 0")
    if m.group(1) == "uniform" and not 0 < a < b:
        raise ValueError(f"prior {text!r}: need 0 < low < high")
    return Prior(m.group(1), a, b)


@dataclass(frozen=True, slots=True)
class UncertainParam:
    """A step parameter the plant's history may correct, with its prior.

    Attributes
    ----------
    step : int
        1-based step index.
    param : str
        Parameter name of the step's kind.
    prior : Prior
        Relative to the file's value (``value = file_value * factor``).
    unit : str
        The parameter's unit (``simulators.kinds``).
    """

    step: int
    param: str
    prior: Prior
    unit: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.step, self.param)


@dataclass(frozen=True, slots=True)
class Economics:
    """Money, in ``currency`` per batch.

    Attributes
    ----------
    measurement_cost : float
        Cost of gauging one characteristic on one bar (currency per bar and
        characteristic); what an extra or larger sample costs.
    station_cost : float
        Cost of running one inspection station for one batch (currency per
        batch), on top of its measurements; what adding an inspection step costs.
    """

    batch_value: float
    scrap_cost: float
    processing_cost_per_step: float
    currency: str = "EUR"
    measurement_cost: float = 0.0
    station_cost: float = 0.0


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

        Parameters
        ----------
        step : int
            The inspection step.
        sample_means : ndarray (..., n_chars)
            Sample means in the characteristics' units; NaN where not gauged
            (never outside a band).

        Returns
        -------
        ndarray of bool (...)
        """
        lo, hi = self.gate_bands(step)
        with np.errstate(invalid="ignore"):
            return ((sample_means < lo) | (sample_means > hi)).any(axis=-1)

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
        return CompiledProcess.build(self)


@dataclass(frozen=True)
class CompiledProcess:
    """The process as plain contiguous arrays for the numba kernel.

    Steps are 0-based here (``step index - 1``).
    """

    kind: np.ndarray            # (n_steps,) int64
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
        kind = np.array([KIND_IDS[s.kind] for s in p.steps], dtype=np.int64)
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
            kind=kind, normals=np.array([KINDS[s.kind].normals for s in p.steps], dtype=np.int64),
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


# ---------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------

class _Reader:
    """Pulls typed fields out of one table of the file, naming it in errors."""

    def __init__(self, file: str, where: str, table: Any):
        self.file, self.where = file, where
        if not isinstance(table, dict):
            self.fail(f"expected a table, got {type(table).__name__}")
        self.table = table

    def fail(self, msg: str) -> None:
        raise ProcessDefinitionError(f"{self.file}: {self.where}: {msg}")

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                self.fail(f"missing required field '{key}'")
            return default
        val = self.table[key]
        if typ is float and isinstance(val, int) and not isinstance(val, bool):
            val = float(val)
        if not isinstance(val, typ) or (typ is not bool and isinstance(val, bool)):
            name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            self.fail(f"field '{key}' must be {name}, got {val!r}")
        if isinstance(val, float) and not np.isfinite(val):
            self.fail(f"field '{key}' must be finite, got {val!r}")
        return val

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.table) - allowed)
        if extra:
            self.fail(f"unknown field(s) {extra}; allowed: {sorted(allowed)}")


def _tables(file: str, doc: dict, key: str) -> list[tuple[str, dict]]:
    items = doc.get(key, [])
    if not isinstance(items, list):
        raise ProcessDefinitionError(f"{file}: '{key}' must be an array of tables ([[{key}]])")
    return [(f"{key}[{i}]", t) for i, t in enumerate(items)]


def load_process(source: str | Path | None = None) -> Process:
    """Load and validate a process definition.

    Parameters
    ----------
    source : str or Path, optional
        ``None`` or ``"default"`` for the built-in 50-step process, ``"small"``
        for the built-in 12-step process, otherwise a path to a TOML file.

    Returns
    -------
    Process
        The frozen definition.

    Raises
    ------
    ProcessDefinitionError
        If the file cannot be read or any entry is invalid; the message names
        the file and the entry.

    Examples
    --------
    >>> p = load_process()
    >>> p.n_steps, len(p.partners), len(p.factories)
    (50, 5, 10)
    """
    if source is None or str(source) in BUILTIN_PROCESSES:
        fname = BUILTIN_PROCESSES[str(source or "default")]
        text = resources.files("simulators.processes").joinpath(fname).read_text("utf-8")
        label = fname
    else:
        path = Path(source)
        label = str(path)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise ProcessDefinitionError(f"{label}: no such process file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProcessDefinitionError(f"{label}: cannot read: {exc}") from None
    return parse_process(text, label)


def parse_process(text: str, label: str = "<string>") -> Process:
    """Parse and validate process TOML text; see :func:`load_process`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProcessDefinitionError(f"{label}: not valid TOML: {exc}") from None

    head = _Reader(label, "[process]", doc.get("process", None) or {})
    head.unknown({"name", "version", "description", "bars_per_batch",
                  "acceptance_level", "season_days"})
    name = head.get("name", str)
    version = str(head.get("version", (str, int), "1"))
    bars = head.get("bars_per_batch", int)
    if bars < 1:
        head.fail("bars_per_batch must be at least 1")
    acc = head.get("acceptance_level", float)
    if not 0.0 < acc <= 1.0:
        head.fail(f"acceptance_level must be in (0, 1], got {acc}")
    season = head.get("season_days", float, 250.0)

    eco_r = _Reader(label, "[economics]", doc.get("economics", None) or {})
    eco_r.unknown({"batch_value", "scrap_cost", "processing_cost_per_step", "currency",
                   "measurement_cost", "station_cost"})
    economics = Economics(eco_r.get("batch_value", float), eco_r.get("scrap_cost", float),
                          eco_r.get("processing_cost_per_step", float, 0.0),
                          eco_r.get("currency", str, "EUR"),
                          eco_r.get("measurement_cost", float, 0.0),
                          eco_r.get("station_cost", float, 0.0))
    if economics.measurement_cost < 0 or economics.station_cost < 0:
        eco_r.fail("measurement_cost and station_cost must be >= 0")

    partners = []
    for where, t in _tables(label, doc, "partners"):
        r = _Reader(label, where, t)
        r.unknown({"id", "name", "offset"})
        partners.append(Partner(r.get("id", str), r.get("name", str, ""), r.get("offset", float, 0.0)))
    _unique(label, "partners", [p.id for p in partners])
    pids = {p.id for p in partners}

    factories = []
    for where, t in _tables(label, doc, "factories"):
        r = _Reader(label, where, t)
        r.unknown({"id", "partner", "name", "drift"})
        f = Factory(r.get("id", str), r.get("partner", str), r.get("name", str, ""),
                    r.get("drift", float, 0.0))
        if f.partner not in pids:
            r.fail(f"unknown partner '{f.partner}'; known: {sorted(pids)}")
        factories.append(f)
    _unique(label, "factories", [f.id for f in factories])
    fac = {f.id: f for f in factories}

    chars = []
    gates = []
    for where, t in _tables(label, doc, "characteristics"):
        r = _Reader(label, where, t)
        r.unknown({"name", "unit", "role", "nominal", "lower", "upper", "gauge_sigma",
                   "description", "gates"})
        role = r.get("role", str, "other")
        if role not in ROLES:
            r.fail(f"unknown role '{role}'; known: {list(ROLES)}")
        c = Characteristic(r.get("name", str), r.get("unit", str), role,
                           r.get("nominal", float), r.get("lower", float), r.get("upper", float),
                           r.get("gauge_sigma", float, 0.0), r.get("description", str, ""))
        if not c.lower <= c.nominal <= c.upper:
            r.fail(f"need lower <= nominal <= upper, got {c.lower} <= {c.nominal} <= {c.upper}")
        if c.gauge_sigma < 0:
            r.fail("gauge_sigma must be >= 0")
        _check_unit(r, c.unit)
        for j, g in enumerate(r.get("gates", list, [])):
            gr = _Reader(label, f"{where}.gates[{j}]", g)
            gr.unknown({"step", "lower", "upper"})
            gate = Gate(gr.get("step", int), c.name, gr.get("lower", float), gr.get("upper", float))
            if gate.lower > gate.upper:
                gr.fail("lower must be <= upper")
            gates.append((gr, gate))
        chars.append(c)
    if not chars:
        raise ProcessDefinitionError(f"{label}: at least one [[characteristics]] is required")
    _unique(label, "characteristics", [c.name for c in chars])
    cnames = {c.name: c for c in chars}
    roles_present = {c.role for c in chars}

    steps = []
    uncertain_raw: list[tuple[_Reader, dict | bool]] = []
    for where, t in _tables(label, doc, "steps"):
        r = _Reader(label, where, t)
        r.unknown({"step", "name", "kind", "factory", "params", "target", "uncertain",
                   "produces", "acts_on"})
        idx = r.get("step", int)
        r.where = f"{where} (step {idx})"
        if idx != len(steps) + 1:
            r.fail(f"steps must be numbered 1, 2, 3, ... in order; expected {len(steps) + 1}")
        kind = r.get("kind", str)
        if kind not in KINDS:
            r.fail(f"unknown kind '{kind}'; known: {sorted(KINDS)}")
        spec = KINDS[kind]
        fid = r.get("factory", str)
        if fid not in fac:
            r.fail(f"unknown factory '{fid}'; known: {sorted(fac)}")
        given = r.get("params", dict, {})
        bad = sorted(set(given) - set(spec.params))
        if bad:
            r.fail(f"unknown parameter(s) {bad} for kind '{kind}'; known: {list(spec.params)}")
        params = {}
        for pname, (default, _unit) in spec.params.items():
            v = given.get(pname, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                r.fail(f"parameter '{pname}' must be a finite number, got {v!r}")
            params[pname] = float(v)
        missing = [role for role in spec.needs if role not in roles_present]
        if missing:
            r.fail(f"kind '{kind}' needs characteristic role(s) {missing}, which the process lacks")
        target = r.get("target", str, None)
        if kind in ("bending", "rebend"):
            if target is None or target not in cnames or cnames[target].role != "bend_angle":
                r.fail(f"kind '{kind}' needs 'target' naming a bend_angle characteristic")
        elif target is not None:
            r.fail(f"'target' is only for bending and rebend steps")
        unc = r.table.get("uncertain", True)
        if not isinstance(unc, (dict, bool)):
            r.fail(f"field 'uncertain' must be a table or true/false, got {unc!r}")
        uncertain_raw.append((r, unc))
        produces, acts_on = station_fields(r.table, kind, cnames, r.fail)
        steps.append(Step(idx, r.get("name", str, kind), kind, fid, fac[fid].partner,
                          MappingProxyType(params), target, produces, acts_on))
    if not steps:
        raise ProcessDefinitionError(f"{label}: at least one [[steps]] is required")
    n = len(steps)
    # Each partner owns one contiguous chain of steps (just-in-time hand-over).
    seen: list[str] = []
    for s in steps:
        if not seen or seen[-1] != s.partner:
            if s.partner in seen:
                raise ProcessDefinitionError(
                    f"{label}: steps[{s.index - 1}] (step {s.index}): partner '{s.partner}' "
                    f"already handed the batch on; each partner owns one contiguous chain")
            seen.append(s.partner)

    levers = []
    for where, t in _tables(label, doc, "levers"):
        r = _Reader(label, where, t)
        r.unknown({"name", "step", "sets", "unit", "nominal", "lower", "upper", "max_change",
                   "cost_per_use", "cost_per_unit", "integer", "description"})
        lv = Lever(r.get("name", str), r.get("step", int), r.get("sets", str), r.get("unit", str),
                   r.get("nominal", float), r.get("lower", float), r.get("upper", float),
                   r.get("max_change", float), r.get("cost_per_use", float),
                   r.get("cost_per_unit", float, 0.0), r.get("integer", bool, False),
                   r.get("description", str, ""))
        if not 1 <= lv.step <= n:
            r.fail(f"step {lv.step} is not a step of this process (1..{n})")
        spec = KINDS[steps[lv.step - 1].kind]
        if lv.sets not in spec.lever_params:
            r.fail(f"step {lv.step} is a '{spec.name}' step, whose lever parameters are "
                   f"{list(spec.lever_params)}; '{lv.sets}' is not one of them")
        if not lv.lower <= lv.nominal <= lv.upper:
            r.fail(f"need lower <= nominal <= upper, got {lv.lower} <= {lv.nominal} <= {lv.upper}")
        if lv.max_change <= 0 or lv.cost_per_use < 0 or lv.cost_per_unit < 0:
            r.fail("max_change must be > 0 and costs >= 0")
        _check_unit(r, lv.unit)
        levers.append(lv)
    _unique(label, "levers", [lv.name for lv in levers])
    levers.sort(key=lambda lv: lv.step)  # the kernel walks levers step by step
    pairs = [(lv.step, lv.sets) for lv in levers]
    if len(set(pairs)) != len(pairs):
        raise ProcessDefinitionError(f"{label}: two levers set the same parameter of one step")

    inspections = []
    for where, t in _tables(label, doc, "inspections"):
        r = _Reader(label, where, t)
        r.unknown({"step", "measures", "sample"})
        ins = Inspection(r.get("step", int), tuple(r.get("measures", list)), r.get("sample", int))
        if not 1 <= ins.step <= n or steps[ins.step - 1].kind != "inspection":
            r.fail(f"step {ins.step} is not an inspection step")
        unknown = [m for m in ins.measures if m not in cnames]
        if unknown:
            r.fail(f"unknown characteristic(s) {unknown}")
        if not 1 <= ins.sample <= bars:
            r.fail(f"sample must be in 1..bars_per_batch ({bars})")
        inspections.append(ins)
    inspections.sort(key=lambda i: i.step)
    _unique(label, "inspections", [i.step for i in inspections])
    for s in steps:
        if s.kind == "inspection" and s.index not in {i.step for i in inspections}:
            raise ProcessDefinitionError(
                f"{label}: steps[{s.index - 1}] (step {s.index}): inspection step has no "
                f"[[inspections]] entry saying what it measures")

    check_production(label, steps, inspections)

    for r, g in gates:
        if g.step not in {i.step for i in inspections}:
            r.fail(f"gate at step {g.step}, which is not an inspection")
        ins = next(i for i in inspections if i.step == g.step)
        if g.characteristic not in ins.measures:
            r.fail(f"gate on '{g.characteristic}' at step {g.step}, which does not measure it")

    uncertain = _resolve_uncertain(steps, uncertain_raw, {(lv.step, lv.sets) for lv in levers})

    faults = []
    for where, t in _tables(label, doc, "faults"):
        r = _Reader(label, where, t)
        r.unknown({"name", "step", "rate", "low", "high", "unit", "symmetric", "recoverable",
                   "description"})
        f = Fault(r.get("name", str), r.get("step", int), r.get("rate", float),
                  r.get("low", float), r.get("high", float), r.get("unit", str),
                  r.get("symmetric", bool, False), r.get("recoverable", str, "yes"),
                  r.get("description", str, ""))
        if not 1 <= f.step <= n:
            r.fail(f"step {f.step} is not a step of this process (1..{n})")
        spec = KINDS[steps[f.step - 1].kind]
        if spec.fault is None:
            r.fail(f"step {f.step} is a '{spec.name}' step, which has no fault channel")
        if f.unit != spec.fault_unit:
            r.fail(f"a '{spec.name}' fault ({spec.fault}) is in '{spec.fault_unit}', not '{f.unit}'")
        if not 0.0 <= f.rate <= 1.0 or f.low > f.high:
            r.fail("need 0 <= rate <= 1 and low <= high")
        if f.recoverable not in ("yes", "partly", "no"):
            r.fail("recoverable must be 'yes', 'partly' or 'no'")
        faults.append(f)
    _unique(label, "faults", [f.name for f in faults])
    _unique(label, "faults (one fault type per step)", [f.step for f in faults])

    return Process(
        name=name, version=version, description=head.get("description", str, ""),
        bars_per_batch=bars, acceptance_level=acc, season_days=season,
        partners=tuple(partners), factories=tuple(factories), characteristics=tuple(chars),
        steps=tuple(steps), levers=tuple(levers), inspections=tuple(inspections),
        faults=tuple(faults), gates=tuple(g for _, g in gates), economics=economics,
        source=label, digest=hashlib.sha256(text.encode()).hexdigest()[:16],
        uncertain=uncertain,
    )


def _resolve_uncertain(steps: list[Step], raw: list[tuple[_Reader, dict | bool]],
                       lever_params: set[tuple[int, str]]) -> tuple[UncertainParam, ...]:
    """The uncertain parameters: each kind's defaults, overridden per step.

    A step's ``uncertain`` is ``false`` (none of the defaults), ``true`` or
    absent (the defaults), or a table ``{param = "prior" | true | false}`` that
    overrides single entries on top of the defaults (``true`` = the kind's
    default prior, ``false`` = not uncertain here).
    """
    out = []
    for st, (r, given) in zip(steps, raw):
        spec = KINDS[st.kind]
        lever_here = {p for s, p in lever_params if s == st.index}
        # Defaults skip what a lever sets here and parameters at 0 in the file
        # (a relative prior on 0 is 0): the kind cannot know either in advance.
        chosen = {} if given is False else {
            p: (prior, False) for p, prior in spec.uncertain.items()
            if p not in lever_here and st.params[p] != 0.0}
        if isinstance(given, dict):
            for p, v in given.items():
                if p not in spec.params:
                    r.fail(f"uncertain: unknown parameter '{p}' for kind '{st.kind}'; "
                           f"known: {list(spec.params)}")
                if p in lever_here:
                    r.fail(f"uncertain: '{p}' is set by a lever at this step; a lever's own "
                           f"parameter comes from the plan and cannot be calibrated")
                if v is False:
                    chosen.pop(p, None)
                    continue
                if v is True:
                    if p not in spec.uncertain:
                        r.fail(f"uncertain: '{p}' has no default prior for kind '{st.kind}' "
                               f"(defaults: {list(spec.uncertain)}); give one, e.g. "
                               f"{p} = \"lognormal(0, 0.3)\"")
                    v = spec.uncertain[p]
                if not isinstance(v, str):
                    r.fail(f"uncertain: '{p}' must be a prior string, true or false, got {v!r}")
                chosen[p] = (v, True)
        for p, (text, explicit) in chosen.items():
            if explicit and st.params[p] == 0.0:
                r.fail(f"uncertain: '{p}' is 0 in the file, and a prior relative to the file's "
                       f"value would keep it 0")
            try:
                prior = parse_prior(text)
            except ValueError as exc:
                r.fail(f"uncertain: '{p}': {exc}")
            out.append(UncertainParam(st.index, p, prior, spec.params[p][1]))
    return tuple(out)


def _unique(label: str, what: str, keys: list) -> None:
    dup = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dup:
        raise ProcessDefinitionError(f"{label}: duplicate {what}: {dup}")


_UNITS_OK: dict[str, bool] = {}


def _check_unit(r: _Reader, unit: str) -> None:
    """Units must parse with pint, so partner data can be converted into them."""
    if unit not in _UNITS_OK:
        try:
            from simulators.units import parse_unit
            parse_unit(unit)
            _UNITS_OK[unit] = True
        except Exception:  # noqa: BLE001 - any pint failure means "not a unit"
            _UNITS_OK[unit] = False
    if not _UNITS_OK[unit]:
        r.fail(f"unit '{unit}' is not a unit pint understands")
