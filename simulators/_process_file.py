"""Reading a process file: TOML text into a validated :class:`Process`
(private; import :func:`load_process` and :func:`parse_process` from
:mod:`simulators.definition`).

:func:`parse_process` reads the file table by table, one function per kind
of table, each checking what it can on its own; the checks across tables
(a lever's parameter against its step's kind, an inspection's
characteristics, gates at inspections) follow the order of the file's
dependencies: partners, factories, characteristics, steps, levers,
inspections, faults. Every error names the file and the entry.
"""

from __future__ import annotations

import hashlib
import tomllib
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from simulators._entries import (Characteristic, Economics, Factory, Fault, Gate, Inspection, Lever, Partner,
                                 ProcessDefinitionError, Step, UncertainParam, parse_prior)
from simulators._process_def import Process
from simulators.kinds import KINDS, ROLES
from simulators.stations import check_production, station_fields

__all__ = ["BUILTIN_PROCESSES", "TableReader", "decision_step_count", "load_process", "parse_process"]

BUILTIN_PROCESSES = {"default": "default.toml", "small": "small.toml"}


def decision_step_count(name: str = "default") -> int:
    """Number of distinct lever steps of a built-in process (an episode's
    decisions), read from its file without validating it.

    For registering the gymnasium env on ``import simulators``: a full
    :func:`load_process` builds the unit registry first (about 2 s).
    """
    text = resources.files("simulators.processes").joinpath(BUILTIN_PROCESSES[name]).read_text("utf-8")
    return len({int(lv["step"]) for lv in tomllib.loads(text).get("levers", [])})


class TableReader:
    """Pulls typed fields out of one TOML table, naming the file and entry in errors.

    A float field takes an integer (``1`` for ``1.0``) and must be finite.
    Other TOML files of the project (partner mappings) subclass it with their
    own ``error``.

    Parameters
    ----------
    file : str
        The file's name, as errors show it.
    where : str
        The entry, e.g. ``steps[3] (step 4)``.
    table : dict
        The parsed table; anything else fails.
    """

    #: The exception raised, with ``"{file}: {where}: {message}"``.
    error: type[Exception] = ProcessDefinitionError

    def __init__(self, file: str, where: str, table: Any):
        self.file, self.where = file, where
        if not isinstance(table, dict):
            self.fail(f"expected a table, got {type(table).__name__}")
        self.table = table

    def fail(self, msg: str) -> None:
        raise self.error(f"{self.file}: {self.where}: {msg}")

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

    head = TableReader(label, "[process]", doc.get("process", None) or {})
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

    economics = _read_economics(label, doc)
    partners = _read_partners(label, doc)
    factories = _read_factories(label, doc, {p.id for p in partners})
    chars, gates = _read_characteristics(label, doc)
    steps, uncertain_raw = _read_steps(label, doc, {f.id: f for f in factories}, chars)
    levers = _read_levers(label, doc, steps)
    inspections = _read_inspections(label, doc, steps, chars, bars)
    check_production(label, steps, inspections)
    _check_gates(gates, inspections)
    uncertain = _resolve_uncertain(steps, uncertain_raw, {(lv.step, lv.sets) for lv in levers})
    faults = _read_faults(label, doc, steps)

    return Process(
        name=name, version=version, description=head.get("description", str, ""),
        bars_per_batch=bars, acceptance_level=acc, season_days=season,
        partners=tuple(partners), factories=tuple(factories), characteristics=tuple(chars),
        steps=tuple(steps), levers=tuple(levers), inspections=tuple(inspections),
        faults=tuple(faults), gates=tuple(g for _, g in gates), economics=economics,
        source=label, digest=hashlib.sha256(text.encode()).hexdigest()[:16],
        uncertain=uncertain,
    )


def _read_economics(label: str, doc: dict) -> Economics:
    eco_r = TableReader(label, "[economics]", doc.get("economics", None) or {})
    eco_r.unknown({"batch_value", "scrap_cost", "processing_cost_per_step", "currency",
                   "measurement_cost", "station_cost"})
    economics = Economics(eco_r.get("batch_value", float), eco_r.get("scrap_cost", float),
                          eco_r.get("processing_cost_per_step", float, 0.0),
                          eco_r.get("currency", str, "EUR"),
                          eco_r.get("measurement_cost", float, 0.0),
                          eco_r.get("station_cost", float, 0.0))
    if economics.measurement_cost < 0 or economics.station_cost < 0:
        eco_r.fail("measurement_cost and station_cost must be >= 0")
    return economics


def _read_partners(label: str, doc: dict) -> list[Partner]:
    partners = []
    for where, t in _tables(label, doc, "partners"):
        r = TableReader(label, where, t)
        r.unknown({"id", "name", "offset"})
        partners.append(Partner(r.get("id", str), r.get("name", str, ""), r.get("offset", float, 0.0)))
    _unique(label, "partners", [p.id for p in partners])
    return partners


def _read_factories(label: str, doc: dict, pids: set[str]) -> list[Factory]:
    factories = []
    for where, t in _tables(label, doc, "factories"):
        r = TableReader(label, where, t)
        r.unknown({"id", "partner", "name", "drift"})
        f = Factory(r.get("id", str), r.get("partner", str), r.get("name", str, ""),
                    r.get("drift", float, 0.0))
        if f.partner not in pids:
            r.fail(f"unknown partner '{f.partner}'; known: {sorted(pids)}")
        factories.append(f)
    _unique(label, "factories", [f.id for f in factories])
    return factories


def _read_characteristics(label: str, doc: dict) -> tuple[list[Characteristic], list[tuple[TableReader, Gate]]]:
    """The characteristics, and their gates with the reader that names each in errors
    (gates are checked against the inspections, read later)."""
    chars = []
    gates = []
    for where, t in _tables(label, doc, "characteristics"):
        r = TableReader(label, where, t)
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
            gr = TableReader(label, f"{where}.gates[{j}]", g)
            gr.unknown({"step", "lower", "upper"})
            gate = Gate(gr.get("step", int), c.name, gr.get("lower", float), gr.get("upper", float))
            if gate.lower > gate.upper:
                gr.fail("lower must be <= upper")
            gates.append((gr, gate))
        chars.append(c)
    if not chars:
        raise ProcessDefinitionError(f"{label}: at least one [[characteristics]] is required")
    _unique(label, "characteristics", [c.name for c in chars])
    return chars, gates


def _read_steps(label: str, doc: dict, fac: dict[str, Factory],
                chars: list[Characteristic]) -> tuple[list[Step], list[tuple[TableReader, dict | bool]]]:
    """The steps, and each step's raw ``uncertain`` entry with its reader (resolved
    once the levers are known, see :func:`_resolve_uncertain`)."""
    cnames = {c.name: c for c in chars}
    roles_present = {c.role for c in chars}
    steps = []
    uncertain_raw: list[tuple[TableReader, dict | bool]] = []
    for where, t in _tables(label, doc, "steps"):
        r = TableReader(label, where, t)
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
            r.fail("'target' is only for bending and rebend steps")
        unc = r.table.get("uncertain", True)
        if not isinstance(unc, (dict, bool)):
            r.fail(f"field 'uncertain' must be a table or true/false, got {unc!r}")
        uncertain_raw.append((r, unc))
        produces, acts_on = station_fields(r.table, kind, cnames, r.fail)
        steps.append(Step(idx, r.get("name", str, kind), kind, fid, fac[fid].partner,
                          MappingProxyType(params), target, produces, acts_on))
    if not steps:
        raise ProcessDefinitionError(f"{label}: at least one [[steps]] is required")
    # Each partner owns one contiguous chain of steps (just-in-time hand-over).
    seen: list[str] = []
    for s in steps:
        if not seen or seen[-1] != s.partner:
            if s.partner in seen:
                raise ProcessDefinitionError(
                    f"{label}: steps[{s.index - 1}] (step {s.index}): partner '{s.partner}' "
                    f"already handed the batch on; each partner owns one contiguous chain")
            seen.append(s.partner)
    return steps, uncertain_raw


def _read_levers(label: str, doc: dict, steps: list[Step]) -> list[Lever]:
    n = len(steps)
    levers = []
    for where, t in _tables(label, doc, "levers"):
        r = TableReader(label, where, t)
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
    return levers


def _read_inspections(label: str, doc: dict, steps: list[Step], chars: list[Characteristic],
                      bars: int) -> list[Inspection]:
    n = len(steps)
    cnames = {c.name for c in chars}
    inspections = []
    for where, t in _tables(label, doc, "inspections"):
        r = TableReader(label, where, t)
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
    return inspections


def _check_gates(gates: list[tuple[TableReader, Gate]], inspections: list[Inspection]) -> None:
    """Each gate sits at an inspection that measures its characteristic."""
    for r, g in gates:
        if g.step not in {i.step for i in inspections}:
            r.fail(f"gate at step {g.step}, which is not an inspection")
        ins = next(i for i in inspections if i.step == g.step)
        if g.characteristic not in ins.measures:
            r.fail(f"gate on '{g.characteristic}' at step {g.step}, which does not measure it")


def _read_faults(label: str, doc: dict, steps: list[Step]) -> list[Fault]:
    n = len(steps)
    faults = []
    for where, t in _tables(label, doc, "faults"):
        r = TableReader(label, where, t)
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
    return faults


def _resolve_uncertain(steps: list[Step], raw: list[tuple[TableReader, dict | bool]],
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


#: Units of the toolkit's own process files, known to parse with pint (a test
#: holds each one to it): reading a process that uses only these, as every
#: command that loads a saved model does, need not import pint (0.5 s of CPU).
KNOWN_UNITS = frozenset({"1", "mm", "um", "mm/m", "deg", "degC", "K", "MPa", "kN", "g", "kg", "h", "min",
                         "A/dm^2"})
_UNITS_OK: dict[str, bool] = dict.fromkeys(KNOWN_UNITS, True)


def _check_unit(r: TableReader, unit: str) -> None:
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
