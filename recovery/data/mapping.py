"""Partner mappings: a small TOML file that says how a partner's file becomes step data.

The format is documented in ``docs/partner-data.md``; ``examples/cip_dmd/`` holds
three real ones. :func:`load_mapping` reads a mapping into frozen dataclasses and
checks it against its process (known steps, characteristics, levers, units, and
that the partner runs the steps it delivers), so a mistake in the mapping is
reported once, naming the mapping file and the entry, instead of rejecting every
row of the data.

Columns of the partner's file are named either by their header text (a TOML
string) or by their 1-based position (a TOML integer), which is what files with
repeated or garbled headers (Q-DAS exports) need.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from simulators.definition import BUILTIN_PROCESSES, Process, ProcessDefinitionError, load_process
from simulators.schema import KINDS_OF_ROW, StepRules

__all__ = ["MappingError", "ColumnRef", "FileFormat", "Ids", "Timestamp", "Genealogy",
           "ValueColumn", "LongVariable", "LongLayout", "PartnerMapping", "load_mapping"]

#: A column of the partner's file: header text (str) or 1-based position (int).
ColumnRef = str | int


class MappingError(ValueError):
    """A mapping file is malformed or does not fit its process; names the file and entry."""


@dataclass(frozen=True, slots=True)
class FileFormat:
    """How to read the file.

    Attributes
    ----------
    format : str
        ``csv`` or ``parquet``.
    encoding : str
        Text encoding of a CSV (Python codec name, e.g. ``utf-8``, ``latin-1``, ``cp1252``).
    separator : str
        One character between fields (``,``, ``;``, ``\\t``, ``|``...).
    decimal : str
        Decimal mark of numbers (``.`` or ``,``).
    thousands : str
        Thousands separator to drop from numbers, or empty.
    header_line : int
        1-based line that names the columns; 0 when the file has none (refer to
        columns by number then).
    data_line : int
        1-based line of the first data row; lines between are metadata and skipped.
    """

    format: str = "csv"
    encoding: str = "utf-8"
    separator: str = ","
    decimal: str = "."
    thousands: str = ""
    header_line: int = 1
    data_line: int = 2


@dataclass(frozen=True, slots=True)
class Ids:
    """Batch and bar identifiers.

    Either ``batch`` (and optionally ``bar``) name columns directly, or ``part``
    names a part-id column and ``pattern`` (a regular expression with the named
    groups ``batch`` and optionally ``bar``) splits it. ``agree`` requires every
    part-id column of a row (see :attr:`ValueColumn.part`) to hold the same id.
    """

    batch: ColumnRef | None = None
    bar: ColumnRef | None = None
    part: ColumnRef | None = None
    pattern: str | None = None
    agree: bool = False


@dataclass(frozen=True, slots=True)
class Timestamp:
    """Timestamp column, its ``strptime`` format (or ``ISO8601``) and the clock's time zone."""

    column: ColumnRef
    format: str = "ISO8601"
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Genealogy:
    """How a row's part links to a part of an earlier step.

    Attributes
    ----------
    parent_step : int
        The earlier step whose records the parent part must have.
    parent : ColumnRef or None
        Column with the parent's part id (split with the ``[ids]`` pattern); None
        means the part keeps its id across the steps.
    required : bool
        Reject rows whose parent has no record at ``parent_step`` in the store.
    """

    parent_step: int
    parent: ColumnRef | None = None
    required: bool = True


@dataclass(frozen=True, slots=True)
class ValueColumn:
    """One value column of a wide file.

    Attributes
    ----------
    column : ColumnRef
        The column.
    variable : str
        Characteristic (measurement), lever name (lever), event or context name.
    step : int
        Process step the value belongs to.
    kind : str
        ``measurement`` (default), ``lever`` (a set point), ``event`` or ``context``.
    unit : str
        Unit of the values in the file (pint syntax); converted into the process's unit.
    part : ColumnRef or None
        This value's own part-id column (Q-DAS exports repeat the id per characteristic).
    specified : bool
        False when the partner's file gives no specification limits for it; the
        toolkit then reports no capability for it (the process band is only a
        plausibility band).
    """

    column: ColumnRef
    variable: str
    step: int
    kind: str = "measurement"
    unit: str = "1"
    part: ColumnRef | None = None
    specified: bool = True


@dataclass(frozen=True, slots=True)
class LongVariable:
    """What one name in a long file's variable column means."""

    source: str
    variable: str
    step: int | None = None
    kind: str = "measurement"
    unit: str | None = None
    specified: bool = True


@dataclass(frozen=True, slots=True)
class LongLayout:
    """Columns of a long file: one observation per row.

    ``step``, ``kind`` and ``unit`` are columns when given; otherwise each
    :class:`LongVariable` must state them.
    """

    variable: ColumnRef
    value: ColumnRef
    unit: ColumnRef | None = None
    step: ColumnRef | None = None
    kind: ColumnRef | None = None
    variables: tuple[LongVariable, ...] = ()

    def lookup(self) -> Mapping[str, LongVariable]:
        return {v.source: v for v in self.variables}


@dataclass(frozen=True)
class PartnerMapping:
    """A loaded partner mapping (named with a trailing underscore: ``typing.Mapping`` is taken).

    Attributes
    ----------
    name, version, description : str
    path : Path
        The mapping file.
    sha256 : str
        SHA-256 of its bytes (provenance).
    process : Process
        The process the data belongs to.
    partner : str
        Partner delivering the file; must run every step the mapping names.
    factories : tuple of str
        The partner's factories the file covers.
    file : FileFormat
    shape : str
        ``wide`` or ``long``.
    ids : Ids
    timestamp : Timestamp or None
    genealogy : Genealogy or None
    columns : tuple of ValueColumn
        Wide files.
    long : LongLayout or None
        Long files.
    """

    name: str
    version: str
    description: str
    path: Path
    sha256: str
    process: Process
    partner: str
    factories: tuple[str, ...]
    file: FileFormat
    shape: str
    ids: Ids
    timestamp: Timestamp | None
    genealogy: Genealogy | None
    columns: tuple[ValueColumn, ...]
    long: LongLayout | None

    def part_columns(self) -> tuple[ColumnRef, ...]:
        """Every distinct part-id column of a row (the [ids] one and per-column ones)."""
        refs = [self.ids.part] if self.ids.part is not None else []
        refs += [c.part for c in self.columns if c.part is not None]
        return tuple(dict.fromkeys(refs))


class _Reader:
    """Typed fields of one table of the mapping, naming the file and entry in errors."""

    def __init__(self, file: str, where: str, table: Any):
        self.file, self.where = file, where
        if not isinstance(table, dict):
            self.fail(f"expected a table, got {type(table).__name__}")
        self.table = table

    def fail(self, msg: str):
        raise MappingError(f"{self.file}: {self.where}: {msg}")

    def get(self, key: str, typ, default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                self.fail(f"missing required field '{key}'")
            return default
        val = self.table[key]
        if not isinstance(val, typ) or (typ is not bool and isinstance(val, bool)):
            name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            self.fail(f"field '{key}' must be {name}, got {val!r}")
        return val

    def column(self, key: str, default: Any = ...) -> ColumnRef | None:
        val = self.get(key, (str, int), default)
        if isinstance(val, int) and val < 1:
            self.fail(f"field '{key}': column numbers start at 1, got {val}")
        return val

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.table) - allowed)
        if extra:
            self.fail(f"unknown field(s) {extra}; allowed: {sorted(allowed)}")


def load_mapping(path: str | Path) -> PartnerMapping:
    """Load a partner mapping and check it against its process.

    Parameters
    ----------
    path : str or Path
        The mapping's TOML file. A relative ``process`` path inside it is
        relative to the mapping file.

    Returns
    -------
    PartnerMapping

    Raises
    ------
    MappingError
        The message names the mapping file and the entry, e.g.
        ``sawing.toml: columns[0]: unknown characteristic 'wieght' for process 'cip-dmd'``.

    Examples
    --------
    >>> m = load_mapping("examples/cip_dmd/sawing.toml")  # doctest: +SKIP
    >>> m.partner, m.shape
    ('CIP', 'wide')
    """
    path = Path(path)
    label = str(path)
    raw, doc = _read_toml(path, label)
    head = _Reader(label, "[mapping]", doc.get("mapping", {}))
    process, partner, factories, shape = _head(head, path)
    fmt = _file_format(_Reader(label, "[file]", doc.get("file", {})))
    ids = _ids(_Reader(label, "[ids]", doc.get("ids", {})))
    ts = _timestamp(_Reader(label, "[timestamp]", doc["timestamp"])) if "timestamp" in doc else None
    gen = _genealogy(_Reader(label, "[genealogy]", doc["genealogy"]), process, ids) \
        if "genealogy" in doc else None
    columns: list[ValueColumn] = []
    long = None
    check = _Checker(label, process, partner, factories)
    if shape == "wide":
        columns = _wide_columns(label, doc, check, ids)
    else:
        long = _long_layout(label, doc, check)
    if fmt.format == "parquet" and any(isinstance(c, int) for c in _all_refs(ids, ts, gen, columns, long)):
        raise MappingError(f"{label}: Parquet columns must be named, not numbered")
    return PartnerMapping(
        name=head.get("name", str, path.stem), version=str(head.get("version", (str, int), "1")),
        description=head.get("description", str, ""), path=path.resolve(),
        sha256=hashlib.sha256(raw).hexdigest(), process=process, partner=partner,
        factories=factories, file=fmt, shape=shape, ids=ids, timestamp=ts, genealogy=gen,
        columns=tuple(columns), long=long)


def _read_toml(path: Path, label: str) -> tuple[bytes, dict]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MappingError(f"{label}: no such mapping file") from None
    except OSError as exc:
        raise MappingError(f"{label}: cannot read: {exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MappingError(f"{label}: a mapping file must be UTF-8: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{label}: not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"mapping", "file", "ids", "timestamp", "genealogy", "columns",
                               "long", "variables"})
    if extra:
        raise MappingError(f"{label}: unknown section(s) {extra}")
    return raw, doc


def _head(head: _Reader, path: Path) -> tuple[Process, str, tuple[str, ...], str]:
    """[mapping]: (process, partner, factories, shape), checked against the process."""
    head.unknown({"name", "version", "description", "process", "partner", "factories", "shape"})
    psrc = head.get("process", str)
    if psrc not in BUILTIN_PROCESSES:
        psrc = str((path.parent / psrc).resolve())
    try:
        process = load_process(psrc)
    except ProcessDefinitionError as exc:
        head.fail(f"process: {exc}")
    partner = head.get("partner", str)
    factories = tuple(head.get("factories", list, []))
    shape = head.get("shape", str, "wide")
    if shape not in ("wide", "long"):
        head.fail(f"shape must be 'wide' or 'long', got '{shape}'")
    known_partners = {p.id for p in process.partners}
    if partner not in known_partners:
        head.fail(f"partner '{partner}' is not a partner of process '{process.name}'; "
                  f"known: {sorted(known_partners)}")
    fac = {f.id: f for f in process.factories}
    for f in factories:
        if f not in fac:
            head.fail(f"factory '{f}' is not a factory of process '{process.name}'; known: {sorted(fac)}")
        if fac[f].partner != partner:
            head.fail(f"factory '{f}' belongs to partner '{fac[f].partner}', not '{partner}'")
    return process, partner, factories, shape


def _timestamp(r: _Reader) -> Timestamp:
    r.unknown({"column", "format", "timezone"})
    ts = Timestamp(r.column("column"), r.get("format", str, "ISO8601"), r.get("timezone", str, "UTC"))
    try:
        ZoneInfo(ts.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail(f"unknown time zone '{ts.timezone}' (use an IANA name such as 'Europe/Berlin')")
    return ts


def _genealogy(r: _Reader, process: Process, ids: Ids) -> Genealogy:
    r.unknown({"parent_step", "parent", "required"})
    gen = Genealogy(r.get("parent_step", int), r.column("parent", None), r.get("required", bool, True))
    if not 1 <= gen.parent_step <= process.n_steps:
        r.fail(f"parent_step {gen.parent_step} is not a step of process '{process.name}' "
               f"(1..{process.n_steps})")
    if gen.parent is not None and ids.part is None:
        r.fail("a parent column needs [ids] part and pattern to split it")
    return gen


def _wide_columns(label: str, doc: dict, check: _Checker, ids: Ids) -> list[ValueColumn]:
    if "long" in doc or "variables" in doc:
        raise MappingError(f"{label}: [long] and [[variables]] are for shape = 'long'")
    items = doc.get("columns", [])
    if not isinstance(items, list) or not items:
        raise MappingError(f"{label}: a wide mapping needs [[columns]] entries")
    columns = []
    for i, t in enumerate(items):
        r = _Reader(label, f"columns[{i}]", t)
        r.unknown({"column", "variable", "step", "kind", "unit", "part", "specified"})
        vc = ValueColumn(r.column("column"), r.get("variable", str), r.get("step", int),
                         r.get("kind", str, "measurement"), r.get("unit", str, "1"),
                         r.column("part", None), r.get("specified", bool, True))
        check.variable(r, vc.variable, vc.step, vc.kind, vc.unit)
        if vc.part is not None and ids.part is None:
            r.fail("a per-column part id needs [ids] part and pattern")
        columns.append(vc)
    keys = [(c.step, c.variable, c.kind) for c in columns]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise MappingError(f"{label}: two columns map to the same (step, variable, kind): {dup}")
    return columns


def _long_layout(label: str, doc: dict, check: _Checker) -> LongLayout:
    if "columns" in doc:
        raise MappingError(f"{label}: [[columns]] is for shape = 'wide'")
    r = _Reader(label, "[long]", doc.get("long", {}))
    r.unknown({"variable", "value", "unit", "step", "kind"})
    lvars = []
    for i, t in enumerate(doc.get("variables", [])):
        vr = _Reader(label, f"variables[{i}]", t)
        vr.unknown({"source", "variable", "step", "kind", "unit", "specified"})
        lv = LongVariable(vr.get("source", str), vr.get("variable", str), vr.get("step", int, None),
                          vr.get("kind", str, "measurement"), vr.get("unit", str, None),
                          vr.get("specified", bool, True))
        long_unit = r.table.get("unit")
        if lv.unit is None and long_unit is None:
            vr.fail("needs 'unit' (or give [long] unit, a unit column)")
        if lv.step is None and "step" not in r.table:
            vr.fail("needs 'step' (or give [long] step, a step column)")
        if lv.step is not None:
            check.variable(vr, lv.variable, lv.step, lv.kind, lv.unit)
        lvars.append(lv)
    if not lvars:
        raise MappingError(f"{label}: a long mapping needs [[variables]] entries")
    sources = [v.source for v in lvars]
    dup = sorted({s for s in sources if sources.count(s) > 1})
    if dup:
        raise MappingError(f"{label}: variables: duplicate source name(s) {dup}")
    return LongLayout(r.column("variable"), r.column("value"), r.column("unit", None),
                      r.column("step", None), r.column("kind", None), tuple(lvars))


def _file_format(r: _Reader) -> FileFormat:
    r.unknown({"format", "encoding", "separator", "decimal", "thousands", "header_line", "data_line"})
    fmt = FileFormat(r.get("format", str, "csv"), r.get("encoding", str, "utf-8"),
                     r.get("separator", str, ","), r.get("decimal", str, "."),
                     r.get("thousands", str, ""), r.get("header_line", int, 1),
                     r.get("data_line", int, 0) or 0)
    if fmt.format not in ("csv", "parquet"):
        r.fail(f"format must be 'csv' or 'parquet', got '{fmt.format}'")
    try:
        codecs.lookup(fmt.encoding)
    except LookupError:
        r.fail(f"unknown encoding '{fmt.encoding}'")
    if len(fmt.separator) != 1:
        r.fail(f"separator must be one character, got {fmt.separator!r}")
    if fmt.decimal not in (".", ","):
        r.fail(f"decimal must be '.' or ',', got {fmt.decimal!r}")
    if len(fmt.thousands) > 1 or fmt.thousands == fmt.decimal:
        r.fail(f"thousands must be one character other than the decimal mark, or empty")
    if fmt.header_line < 0:
        r.fail("header_line must be >= 0 (0: no header line)")
    data_line = fmt.data_line or fmt.header_line + 1
    if data_line <= fmt.header_line:
        r.fail(f"data_line ({data_line}) must come after header_line ({fmt.header_line})")
    return FileFormat(fmt.format, codecs.lookup(fmt.encoding).name, fmt.separator, fmt.decimal,
                      fmt.thousands, fmt.header_line, data_line)


def _ids(r: _Reader) -> Ids:
    r.unknown({"batch", "bar", "part", "pattern", "agree"})
    ids = Ids(r.column("batch", None), r.column("bar", None), r.column("part", None),
              r.get("pattern", str, None), r.get("agree", bool, False))
    if (ids.batch is None) == (ids.part is None):
        r.fail("give either 'batch' (and optionally 'bar') columns, or a 'part' column with a 'pattern'")
    if ids.part is not None:
        if ids.bar is not None:
            r.fail("'bar' is a column only with 'batch'; with 'part' the pattern's 'bar' group gives it")
        if ids.pattern is None:
            r.fail("a 'part' column needs a 'pattern' with the named group 'batch' (and optionally 'bar')")
        try:
            rx = re.compile(ids.pattern)
        except re.error as exc:
            r.fail(f"pattern is not a valid regular expression: {exc}")
        if "batch" not in rx.groupindex or set(rx.groupindex) - {"batch", "bar"}:
            r.fail("pattern needs the named group (?P<batch>...) and optionally (?P<bar>...), no others")
    elif ids.pattern is not None:
        r.fail("'pattern' goes with a 'part' column")
    return ids


def _all_refs(ids, ts, gen, columns, long):
    refs = [ids.batch, ids.bar, ids.part]
    refs += [ts.column] if ts else []
    refs += [gen.parent] if gen else []
    refs += [c.column for c in columns] + [c.part for c in columns]
    if long:
        refs += [long.variable, long.value, long.unit, long.step, long.kind]
    return [x for x in refs if x is not None]


class _Checker:
    """Checks a mapped variable against the process once, at load time, with the
    step table's rules (:class:`simulators.schema.StepRules`)."""

    def __init__(self, label, process: Process, partner: str, factories: tuple[str, ...]):
        self.label, self.p, self.partner, self.factories = label, process, partner, factories
        self.rules = StepRules(process)

    def variable(self, r: _Reader, variable: str, step: int, kind: str, unit: str | None) -> None:
        p, rules = self.p, self.rules
        if kind not in KINDS_OF_ROW:
            r.fail(f"kind must be one of {list(KINDS_OF_ROW)}, got '{kind}'")
        if not rules.known_step([step])[0]:
            r.fail(f"step {step} is not a step of process '{p.name}' (1..{p.n_steps})")
        name = p.step(step).name
        partner, factory = rules.step_partner([step])[0], rules.step_factory([step])[0]
        if partner != self.partner:
            r.fail(f"step {step} ({name}) is run by partner '{partner}', not '{self.partner}'")
        if self.factories and factory not in self.factories:
            r.fail(f"step {step} ({name}) runs in factory '{factory}', which [mapping] "
                   f"factories {list(self.factories)} does not list")
        if kind == "measurement" and not rules.is_characteristic([variable])[0]:
            r.fail(f"unknown characteristic '{variable}' for process '{p.name}'; "
                   f"known: {sorted(p.char_index)}")
        if kind == "lever":
            if not rules.is_lever([variable])[0]:
                r.fail(f"unknown lever '{variable}' for process '{p.name}'; known: {sorted(p.lever_index)}")
            acts = int(rules.lever_step([variable])[0])
            if acts != step:
                r.fail(f"lever '{variable}' acts at step {acts}, not {step}")
        target = rules.process_unit([kind], [variable])[0]
        if unit is not None:
            from simulators.units import conversion, parse_unit

            try:
                parse_unit(unit)
            except Exception:  # noqa: BLE001 - every pint failure means "not a unit"
                r.fail(f"unknown unit '{unit}'")
            if target is not None:
                try:
                    conversion(unit, target)
                except Exception:  # noqa: BLE001
                    r.fail(f"unit '{unit}' cannot be converted to '{target}', the process's unit "
                           f"of {variable}")
