"""Ingestion: a partner's file -> validated step data in the store, rejects to quarantine.

:func:`ingest` reads a CSV or Parquet file in chunks, maps every chunk into
candidate rows of the step-data schema (``simulators.schema``) with a
:class:`~recovery.data.mapping.PartnerMapping` (or directly, when the file is
already in the schema), converts units with pint, validates every candidate
with a pandera ``DataFrameSchema`` built from the schema and the process, and
then, against the store, checks genealogy and duplicates. One source row is
accepted only when every value it carries passes; otherwise the whole row goes
to the quarantine file with its first reason. Everything one ingest writes is
in one transaction.

:func:`ingest_folder` ingests a folder of Parquet parts (as ``recovery
simulate --out FOLDER`` writes them) part by part: each part is one
:func:`ingest` of its own, with its own provenance, row numbers, transaction
and quarantine file, and a part that cannot be read does not stop the others.

Row numbers
-----------
A reason's ``row`` is the **1-based line number in the source file** for CSV
(metadata and header lines count, so an editor's line number finds it; quoted
fields spanning lines are not supported), and the 1-based row number for
Parquet. Blank lines are not rows.

Counting
--------
``accepted + rejected + duplicates == rows``: a row is a *duplicate* when every
value it carries is already stored with the same key
``(process, batch_id, bar_id, step, variable, kind)`` and the same value, either
from an earlier ingest or from an earlier *accepted* row of this file. The same
key with a different value is a *conflict*, and the row is rejected; the first
value wins. Rows are judged in file order, each against the store and the rows
accepted before it (a rejected row is neither a reference for duplicates nor a
genealogy parent), so the result does not depend on the chunk size.

Quarantine
----------
The quarantine CSV has ``row, column, reason`` and the source row's cells as
read. Cells a spreadsheet would run as a formula (starting with ``= + - @``, tab
or carriage return, except plain numbers) get a leading ``'``
(:func:`neutralise_cell`). It is written to ``.<name>.<host>.<pid>.partial`` in
the same folder and renamed before the store commits; partial files of ingests
that died are removed at the next ingest into that folder.

Ranges
------
A measurement is rejected as implausible outside
``[lower - 10 (upper - lower), upper + 10 (upper - lower)]`` of its
characteristic's band; values out of spec but inside that range are data the
toolkit exists for, and are accepted. A lever outside its hard bounds is rejected.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from recovery.data.mapping import ColumnRef, PartnerMapping, load_mapping
from recovery.data.store import NO_BAR, IngestRecord, Store
from simulators.definition import Process, load_process
from simulators.schema import COLUMNS, KINDS_OF_ROW

__all__ = ["ingest", "ingest_folder", "IngestResult", "FolderIngestResult", "IngestError", "Reason",
           "PLAUSIBLE_WIDTHS", "MAX_REASONS", "default_quarantine_dir", "neutralise_cell"]

#: Band widths beyond a characteristic's band at which a measurement is implausible.
PLAUSIBLE_WIDTHS = 10.0
#: Reasons kept in :attr:`IngestResult.reasons` (the quarantine file has all).
MAX_REASONS = 100
#: Timestamps later than the ingestion time plus this are rejected as in the future.
FUTURE_SLACK = timedelta(days=1)
_NAN_WORDS = {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}


class IngestError(ValueError):
    """The file cannot be ingested at all (unreadable, empty, columns missing).

    The message names the file; the store is left unchanged.
    """


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a source row was rejected: its row number (see the module docstring),
    the source column at fault and the reason."""

    row: int
    column: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did.

    Attributes
    ----------
    source : Path
        The ingested file.
    process : str
        Process the rows belong to.
    rows : int
        Source rows read (blank lines excluded).
    accepted, rejected, duplicates : int
        Source rows stored, sent to quarantine, already stored.
    stored : int
        Observations written (a wide row carries several).
    quarantine : Path or None
        The quarantine file; None when nothing was rejected.
    reasons : tuple of Reason
        The first :data:`MAX_REASONS` rejections, in file order.
    ingest_id : int
        Provenance id in the store.
    """

    source: Path
    process: str
    rows: int
    accepted: int
    rejected: int
    duplicates: int
    stored: int
    quarantine: Path | None
    reasons: tuple[Reason, ...]
    ingest_id: int

    def to_json(self) -> dict:
        """The ``recovery ingest --json`` contract."""
        return {"accepted": self.accepted, "rejected": self.rejected, "duplicates": self.duplicates,
                "quarantine": str(self.quarantine) if self.quarantine else None,
                "reasons": [{"row": r.row, "column": r.column, "reason": r.reason} for r in self.reasons]}


@dataclass(frozen=True)
class FolderIngestResult:
    """What ingesting a folder of Parquet parts did: one ingest per part file.

    Attributes
    ----------
    source : Path
        The folder.
    parts : tuple of Path
        Every part file, in the order ingested.
    results : tuple of IngestResult
        One per part that could be read, in part order.
    errors : tuple of (Path, str)
        Parts that could not be ingested at all, with the message naming the
        file; nothing of them is stored.
    """

    source: Path
    parts: tuple[Path, ...]
    results: tuple[IngestResult, ...]
    errors: tuple[tuple[Path, str], ...]

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.results)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.results)

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.results)

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.results)

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.results)

    @property
    def quarantine(self) -> list[Path]:
        """The quarantine files written (one per part with rejects)."""
        return [r.quarantine for r in self.results if r.quarantine is not None]

    def reasons(self) -> list[tuple[Path, Reason]]:
        """The first :data:`MAX_REASONS` rejections over all parts, in part order."""
        return [(r.source, x) for r in self.results for x in r.reasons][:MAX_REASONS]

    def to_json(self) -> dict:
        """The ``recovery ingest FOLDER --json`` contract: totals, the quarantine
        files, reasons with their ``file``, and one object per part."""
        done = {r.source: r for r in self.results}
        failed = dict(self.errors)
        files = [self._file_json(done.get(f), f, failed.get(f)) for f in self.parts]
        return {"accepted": self.accepted, "rejected": self.rejected, "duplicates": self.duplicates,
                "quarantine": [str(q) for q in self.quarantine],
                "reasons": [{"file": str(f), "row": x.row, "column": x.column, "reason": x.reason}
                            for f, x in self.reasons()],
                "files": files}

    @staticmethod
    def _file_json(r: IngestResult | None, path: Path, error: str | None) -> dict:
        if r is None:
            return {"file": str(path), "rows": 0, "accepted": 0, "rejected": 0, "duplicates": 0,
                    "quarantine": None, "ingest_id": None, "error": error}
        return {"file": str(r.source), "rows": r.rows, "accepted": r.accepted, "rejected": r.rejected,
                "duplicates": r.duplicates, "quarantine": str(r.quarantine) if r.quarantine else None,
                "ingest_id": r.ingest_id, "error": None}


def default_quarantine_dir() -> Path:
    """``$RECOVERY_QUARANTINE_DIR``, else ``quarantine/`` under the user's data directory."""
    env = os.environ.get("RECOVERY_QUARANTINE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("recovery")) / "quarantine"


# ---------------------------------------------------------------------------
# Reading: every file becomes chunks of raw cells plus source row numbers
# ---------------------------------------------------------------------------

@dataclass
class _Chunk:
    raw: pd.DataFrame      # one column per source column, positional (0..), as read
    rows: np.ndarray       # source row number of each raw row


@dataclass
class _Layout:
    """The file's columns: labels for messages and a resolver for mapping references."""

    path: Path
    labels: list[str]
    header: list[str] | None
    header_line: int
    separator: str | None = None
    probe_line: str = ""

    def index(self, ref: ColumnRef) -> int:
        if isinstance(ref, int):
            if ref > len(self.labels):
                raise IngestError(f"{self.path}: column {ref} named in the mapping is beyond the "
                                  f"file's {len(self.labels)} column(s){self._hint()}")
            return ref - 1
        names = self.header or []
        hits = [i for i, h in enumerate(names) if h.strip() == ref]
        if not hits:
            where = f" (line {self.header_line})" if self.header_line else ""
            raise IngestError(f"{self.path}: column '{ref}' named in the mapping is not in the "
                              f"header{where}: {[h for h in names]}{self._hint()}")
        if len(hits) > 1:
            raise IngestError(f"{self.path}: column '{ref}' appears {len(hits)} times in the "
                              f"header; refer to it by number")
        return hits[0]

    def _hint(self) -> str:
        if self.separator is None:
            return ""
        counts = {s: self.probe_line.count(s) for s in (",", ";", "\t", "|") if s != self.separator}
        best = max(counts, key=counts.get) if counts else None
        fields = len(next(csv.reader([self.probe_line], delimiter=self.separator), []))
        if best is not None and counts[best] > 0 and fields <= 1:
            return (f"; the line splits into {fields} field with separator "
                    f"{self.separator!r} but contains {counts[best]} {best!r}: is the separator {best!r}?")
        return ""


class _CsvReader:
    def __init__(self, path: Path, *, encoding: str, separator: str, header_line: int,
                 data_line: int):
        self.path, self.encoding, self.sep = path, encoding, separator
        self.data_line = data_line
        head: list[str] = []
        try:
            with open(path, encoding=encoding, newline="") as f:
                for _ in range(data_line):
                    line = f.readline()
                    if not line:
                        break
                    head.append(line.rstrip("\r\n"))
        except UnicodeDecodeError:
            raise self._decode_error() from None
        if len(head) < data_line or not any(h.strip() for h in head[data_line - 1:]):
            raise IngestError(f"{path}: the file has no data rows (expected the first on line {data_line})")
        split = lambda s: next(csv.reader([s], delimiter=separator)) if s else []  # noqa: E731
        header = split(head[header_line - 1]) if header_line else None
        first = split(head[data_line - 1])
        n = max(len(header or []), len(first))
        labels = []
        for i in range(n):
            h = header[i].strip() if header and i < len(header) else ""
            unique = h and sum(x.strip() == h for x in header) == 1
            labels.append(h if unique else f"column {i + 1}")
        probe = head[header_line - 1] if header_line else head[data_line - 1]
        self.layout = _Layout(path, labels, header, header_line, separator, probe)
        self.total = path.stat().st_size

    def _decode_error(self) -> IngestError:
        with open(self.path, "rb") as f:
            for no, line in enumerate(f, start=1):
                try:
                    line.decode(self.encoding)
                except UnicodeDecodeError as exc:
                    bad = line[exc.start]
                    hint = (" (is it latin-1 or cp1252? set [file] encoding in the mapping)"
                            if self.encoding.replace("_", "-") in ("utf-8", "utf8") else "")
                    return IngestError(f"{self.path}: line {no} is not valid {self.encoding}: "
                                       f"byte 0x{bad:02x} at position {exc.start + 1}{hint}")
        return IngestError(f"{self.path}: cannot be decoded as {self.encoding}")

    def chunks(self, size: int, progress: Callable[[int], None]) -> Iterator[_Chunk]:
        n = len(self.layout.labels)
        row = self.data_line
        with open(self.path, "rb") as fh:
            try:
                reader = pd.read_csv(
                    fh, sep=self.sep, header=None, names=list(range(n)), skiprows=self.data_line - 1,
                    dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                    encoding=self.encoding, chunksize=size, engine="c", quoting=csv.QUOTE_MINIMAL)
                last = 0
                for raw in reader:
                    rows = np.arange(row, row + len(raw), dtype=np.int64)
                    row += len(raw)
                    cells = raw.fillna("")
                    # Blank lines (or lines of bare separators) are not rows.
                    blank = (cells.apply(lambda s: s.str.strip()) == "").all(axis=1).to_numpy()
                    if blank.any():
                        raw, rows = raw[~blank], rows[~blank]
                    pos = fh.tell()
                    progress(pos - last)
                    last = pos
                    if len(raw):
                        yield _Chunk(raw.reset_index(drop=True), rows)
            except UnicodeDecodeError:
                raise self._decode_error() from None
            except pd.errors.ParserError as exc:
                raise IngestError(f"{self.path}: cannot be read as CSV with separator {self.sep!r}: "
                                  f"{_parser_message(exc, self.data_line)}") from None


def _parser_message(exc: Exception, data_line: int) -> str:
    msg = str(exc).strip()
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
    if m:
        line = int(m.group(2)) + data_line - 1
        return f"line {line} has {m.group(3)} fields, the file's rows have {m.group(1)}"
    return msg


class _ParquetReader:
    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"{path}: not a readable Parquet file: {exc}") from None
        names = list(self.file.schema_arrow.names)
        self.total = self.file.metadata.num_rows
        if self.total == 0:
            raise IngestError(f"{path}: the file has no data rows")
        self.layout = _Layout(path, names, names, 0)

    def chunks(self, size: int, progress: Callable[[int], None]) -> Iterator[_Chunk]:
        import pyarrow as pa

        row = 1
        try:
            for batch in self.file.iter_batches(batch_size=size):
                raw = batch.to_pandas()
                raw.columns = range(raw.shape[1])
                rows = np.arange(row, row + len(raw), dtype=np.int64)
                row += len(raw)
                progress(len(raw))
                yield _Chunk(raw, rows)
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"{self.path}: not a readable Parquet file: {exc}") from None


# ---------------------------------------------------------------------------
# Mapping: raw chunks -> candidate rows of the schema (with raw text for messages)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Source:
    """Source column label per role of one candidate group (for messages)."""

    value: str
    id: str
    bar: str = ""
    variable: str = ""
    step: str = ""
    kind: str = ""
    unit: str = ""
    timestamp: str = ""
    factory: str = ""
    partner: str = ""
    parent: str = ""


@dataclass
class _Plan:
    """Everything needed to turn a raw chunk into candidates, resolved once per file."""

    process: Process
    mapping: PartnerMapping | None
    layout: _Layout
    sources: list[_Source]
    build: Callable[[_Chunk], pd.DataFrame]
    pattern: re.Pattern | None = None
    ts_format: str | None = None
    ts_zone: str = "UTC"
    ts_required: bool = False
    genealogy_step: int | None = None
    genealogy_required: bool = False
    specified: dict = field(default_factory=dict)


def _text(s: pd.Series) -> pd.Series:
    """Cells as stripped strings, <NA> where empty."""
    if s.dtype.kind in "fiub" or isinstance(s.dtype, pd.DatetimeTZDtype) or s.dtype.kind == "M":
        out = s.astype("string")
    else:
        out = s.astype("string").str.strip()
    return out.mask(out == "")


_Build = Callable[[_Chunk], pd.DataFrame]


def _wide_plan(m: PartnerMapping, layout: _Layout) -> tuple[_Build, list[_Source]]:
    ix = layout.index
    lab = lambda ref: layout.labels[ix(ref)]  # noqa: E731
    ids = m.ids
    id_ref = ids.part if ids.part is not None else ids.batch
    ix(id_ref)  # resolve the ids first: a missing id column is the clearest first error
    bar_i = ix(ids.bar) if ids.bar is not None else None
    cols = [(vc, ix(vc.column), ix(vc.part if vc.part is not None else id_ref)) for vc in m.columns]
    ts_i = ix(m.timestamp.column) if m.timestamp else None
    par_i = ix(m.genealogy.parent) if m.genealogy and m.genealogy.parent is not None else None
    agree_i = [ix(r) for r in m.part_columns()] if ids.agree else []

    def build(ch: _Chunk) -> pd.DataFrame:
        raw = ch.raw
        n = len(raw)
        ts = _text(raw[ts_i]) if ts_i is not None else pd.Series(pd.NA, index=raw.index, dtype="string")
        bar = _text(raw[bar_i]) if bar_i is not None else pd.Series(pd.NA, index=raw.index, dtype="string")
        all_ids, ref = None, None
        if len(agree_i) > 1:
            parts = [_text(raw[i]).fillna("") for i in agree_i]
            ref = parts[0]
            all_ids = parts[0].str.cat(parts[1:], sep=", ")
        frames = []
        for k, (vc, vi, pi) in enumerate(cols):
            # the value whose own id differs from the row's first id column is the one at fault
            agree = (_text(raw[pi]).fillna("") == ref).to_numpy() if ref is not None \
                else np.ones(n, dtype=bool)
            frames.append(pd.DataFrame({
                "_row": ch.rows, "_src": np.int16(k), "id_raw": _text(raw[pi]), "bar_raw": bar,
                "parent_raw": _text(raw[par_i]) if par_i is not None else _text(raw[pi]),
                "step_raw": pd.Series(str(vc.step), index=raw.index, dtype="string"),
                "variable_raw": pd.Series(vc.variable, index=raw.index, dtype="string"),
                "kind_raw": pd.Series(vc.kind, index=raw.index, dtype="string"),
                "value_raw": raw[vi], "unit_raw": pd.Series(vc.unit, index=raw.index, dtype="string"),
                "ts_raw": ts, "ids_agree": agree,
                "ids_all": all_ids if all_ids is not None else pd.Series(pd.NA, index=raw.index, dtype="string"),
            }))
        return pd.concat(frames, ignore_index=True)

    sources = [_Source(value=lab(vc.column), id=lab(vc.part if vc.part is not None else id_ref),
                       bar=lab(ids.bar) if ids.bar is not None else "",
                       variable=lab(vc.column), step=lab(vc.column), kind=lab(vc.column),
                       unit=lab(vc.column), timestamp=lab(m.timestamp.column) if m.timestamp else "",
                       parent=lab(m.genealogy.parent) if par_i is not None else
                       lab(vc.part if vc.part is not None else id_ref))
               for vc in m.columns]
    return build, sources


def _long_plan(m: PartnerMapping, layout: _Layout) -> tuple[_Build, list[_Source]]:
    ix = layout.index
    lab = lambda ref: layout.labels[ix(ref)]  # noqa: E731
    lg = m.long
    ids = m.ids
    id_ref = ids.part if ids.part is not None else ids.batch
    id_i, var_i, val_i = ix(id_ref), ix(lg.variable), ix(lg.value)
    bar_i = ix(ids.bar) if ids.bar is not None else None
    unit_i = ix(lg.unit) if lg.unit is not None else None
    step_i = ix(lg.step) if lg.step is not None else None
    kind_i = ix(lg.kind) if lg.kind is not None else None
    ts_i = ix(m.timestamp.column) if m.timestamp else None
    par_i = ix(m.genealogy.parent) if m.genealogy and m.genealogy.parent is not None else None
    table = lg.lookup()
    to_var = {k: v.variable for k, v in table.items()}
    to_step = {k: str(v.step) for k, v in table.items() if v.step is not None}
    to_kind = {k: v.kind for k, v in table.items()}
    to_unit = {k: v.unit for k, v in table.items() if v.unit is not None}

    def build(ch: _Chunk) -> pd.DataFrame:
        raw = ch.raw
        na = pd.Series(pd.NA, index=raw.index, dtype="string")
        src = _text(raw[var_i])
        known = src.isin(list(table))
        variable = src.map(to_var).astype("string")
        unit = _text(raw[unit_i]) if unit_i is not None else src.map(to_unit).astype("string")
        step = _text(raw[step_i]) if step_i is not None else src.map(to_step).astype("string")
        kind = _text(raw[kind_i]) if kind_i is not None else src.map(to_kind).astype("string")
        return pd.DataFrame({
            "_row": ch.rows, "_src": np.int16(0), "id_raw": _text(raw[id_i]),
            "bar_raw": _text(raw[bar_i]) if bar_i is not None else na,
            "parent_raw": _text(raw[par_i]) if par_i is not None else _text(raw[id_i]),
            "step_raw": step, "variable_raw": variable.where(known, src), "var_known": known,
            "kind_raw": kind, "value_raw": raw[val_i], "unit_raw": unit,
            "ts_raw": _text(raw[ts_i]) if ts_i is not None else na,
            "ids_agree": True, "ids_all": na,
        })

    sources = [_Source(value=lab(lg.value), id=lab(id_ref),
                       bar=lab(ids.bar) if ids.bar is not None else "",
                       variable=lab(lg.variable),
                       step=lab(lg.step) if lg.step is not None else lab(lg.variable),
                       kind=lab(lg.kind) if lg.kind is not None else lab(lg.variable),
                       unit=lab(lg.unit) if lg.unit is not None else lab(lg.variable),
                       timestamp=lab(m.timestamp.column) if m.timestamp else "",
                       parent=lab(m.genealogy.parent) if par_i is not None else lab(id_ref))]
    return build, sources


def _schema_plan(layout: _Layout) -> tuple[_Build, list[_Source]]:
    ix = {c: layout.index(c) for c in COLUMNS}

    def build(ch: _Chunk) -> pd.DataFrame:
        raw = ch.raw
        na = pd.Series(pd.NA, index=raw.index, dtype="string")
        return pd.DataFrame({
            "_row": ch.rows, "_src": np.int16(0), "id_raw": _text(raw[ix["batch_id"]]),
            "bar_raw": _text(raw[ix["bar_id"]]) if raw[ix["bar_id"]].dtype.kind == "O" else raw[ix["bar_id"]],
            "parent_raw": na,
            "step_raw": _text(raw[ix["step"]]) if raw[ix["step"]].dtype.kind == "O" else raw[ix["step"]],
            "variable_raw": _text(raw[ix["variable"]]), "kind_raw": _text(raw[ix["kind"]]),
            "value_raw": raw[ix["value"]], "unit_raw": _text(raw[ix["unit"]]),
            "ts_raw": _text(raw[ix["timestamp"]]) if raw[ix["timestamp"]].dtype.kind == "O"
            else raw[ix["timestamp"]], "factory_raw": _text(raw[ix["factory"]]),
            "partner_raw": _text(raw[ix["partner"]]), "ids_agree": True, "ids_all": na,
        })

    return build, [_Source(value="value", id="batch_id", bar="bar_id", variable="variable",
                           step="step", kind="kind", unit="unit", timestamp="timestamp",
                           factory="factory", partner="partner")]


# ---------------------------------------------------------------------------
# Parsing candidates into schema dtypes (no verdicts here: pandera decides)
# ---------------------------------------------------------------------------

def _numbers(s: pd.Series, decimal: str, thousands: str) -> pd.Series:
    """Parse numbers; <NA> stays missing, text that is not a number becomes NaN."""
    if s.dtype.kind in "fiu":
        return s.astype("float64")
    if s.dtype.kind == "b":
        return s.astype("float64")
    t = _text(s)
    if thousands:
        t = t.str.replace(thousands, "", regex=False)
    if decimal != ".":
        t = t.str.replace(".", "\x00", regex=False).str.replace(decimal, ".", regex=False)
    return pd.to_numeric(t, errors="coerce").astype("float64")


def _whole(s: pd.Series) -> pd.Series:
    """Whole numbers as Int64; anything else (text, fractions) <NA>."""
    if s.dtype.kind in "iu" or str(s.dtype) in ("Int64", "Int32", "Int16", "Int8"):
        return s.astype("Int64")
    f = _numbers(s, ".", "")
    # from 2**53 on a float is no exact whole number (text 2**53 + 1 reads as 2**53) and
    # 1e20 would not fit Int64
    ok = np.isfinite(f) & (f == np.round(f)) & (f.abs() < 2.0 ** 53)
    return f.where(ok).astype("Int64")


def _split_ids(raw: pd.Series, pattern: re.Pattern | None) -> tuple[pd.Series, pd.Series]:
    """(batch_id, bar_id) from a part-id column with the mapping's pattern."""
    if pattern is None:
        return raw, pd.Series(pd.NA, index=raw.index, dtype="Int64")
    parts = raw.astype("string").str.extract(pattern)
    batch = parts["batch"].astype("string")
    bar = _whole(parts["bar"]) if "bar" in parts else pd.Series(pd.NA, index=raw.index, dtype="Int64")
    return batch, bar


#: Timestamps are stored in nanoseconds; outside these (a day inside pandas' limits,
#: so a time-zone shift cannot cross them) they are refused, not a crash.
TS_MIN = pd.Timestamp("1677-09-23")
TS_MAX = pd.Timestamp("2262-04-10")
# width of the zero-padded strptime fields a text can end in
_FIELD_WIDTH = {"d": 2, "m": 2, "H": 2, "M": 2, "S": 2, "y": 2, "I": 2, "Y": 4, "j": 3}


def _in_range(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(times inside [TS_MIN, TS_MAX] as nanoseconds, NaT elsewhere; True where outside)."""
    lo, hi = (TS_MIN, TS_MAX) if s.dt.tz is None else (TS_MIN.tz_localize("UTC"), TS_MAX.tz_localize("UTC"))
    out = ((s < lo) | (s > hi)).fillna(False).astype(bool)
    return s.mask(out).dt.as_unit("ns"), out


def _cut_short(text: pd.Series, fmt: str) -> pd.Series:
    """True where a timestamp's text ends in a field with too few digits for the format,
    as a file cut inside its last timestamp leaves it ('2026-03-0', '08:00:0', '+00:0').

    The parsers accept those (strptime reads '0' for %S, pandas' ISO 8601 reader
    reads '08:0'), so without this the row would be stored at the wrong time.
    """
    codes, uniq = pd.factorize(text)    # timestamps repeat: look at each distinct text once
    if len(uniq) < len(text):
        cut = _cut_short(pd.Series(uniq, dtype="string"), fmt).to_numpy()
        return pd.Series(np.where(codes >= 0, cut[np.maximum(codes, 0)], False), index=text.index)
    tail = text.str.extract(r"(?P<sep>[^0-9]?)(?P<digits>[0-9]+)$")
    n = tail["digits"].str.len()
    if fmt == "ISO8601":
        # ISO 8601 fields have 2 or 4 digits; only a fraction of a second has any number
        cut = (n % 2 == 1) & ~tail["sep"].isin([".", ","])
    else:
        last = re.search(r"%([a-zA-Z])$", fmt)
        width = _FIELD_WIDTH.get(last.group(1)) if last else None
        if width is None:
            return pd.Series(False, index=text.index)
        cut = n < width
    return cut.fillna(False).astype(bool)


def _times(raw: pd.Series, fmt: str, zone: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(parsed local time or NaT, UTC time or NaT, True where outside [TS_MIN, TS_MAX])."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        utc, out = _in_range(raw.dt.tz_convert("UTC"))
        utc = utc.astype("datetime64[ns, UTC]")
        return utc, utc, out
    if raw.dtype.kind == "M":
        local, out = _in_range(raw)
    else:
        text = _text(raw)
        local, out = _in_range(pd.to_datetime(text, format=fmt, errors="coerce", utc=fmt == "ISO8601"))
        if isinstance(local.dtype, pd.DatetimeTZDtype):
            # ISO 8601 with offsets: already an instant; without, read as the zone's clock
            has_offset = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).fillna(False)
            # utc=True and dropped again: pandas may read an offset the pattern above does
            # not ('+0', a cut text, refused by _cut_short); a mixed result would not localize
            naive, _ = _in_range(pd.to_datetime(text.where(~has_offset), format=fmt, errors="coerce",
                                                utc=True).dt.tz_localize(None))
            zoned = naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
            utc = local.where(has_offset, zoned).astype("datetime64[ns, UTC]")
            return local.where(has_offset, naive.dt.tz_localize("UTC")), utc, out
    local = local.astype("datetime64[ns]")
    utc = local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return local, utc.astype("datetime64[ns, UTC]"), out


def _units(src: pd.Series, target: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """(scale, offset, source-unit-known, convertible) per row, via pint on distinct pairs."""
    from simulators.units import conversion, parse_unit

    pairs = pd.DataFrame({"s": src, "t": target})
    scale = np.full(len(src), np.nan)
    offset = np.full(len(src), np.nan)
    known = np.zeros(len(src), dtype=bool)
    conv = np.zeros(len(src), dtype=bool)
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(pairs.fillna("\x00")))
    for k, (s, t) in enumerate(uniq):
        if s == "\x00":
            continue
        sel = codes == k
        try:
            parse_unit(s)
        except Exception:  # noqa: BLE001 - any pint failure: not a unit
            continue
        known[sel] = True
        if t == "\x00":
            continue
        try:
            a, b = conversion(s, t)
        except Exception:  # noqa: BLE001 - incompatible dimensions
            continue
        conv[sel] = True
        scale[sel], offset[sel] = a, b
    idx = src.index
    return (pd.Series(scale, index=idx), pd.Series(offset, index=idx), pd.Series(known, index=idx),
            pd.Series(conv, index=idx))


def _width(lo: float, hi: float) -> float:
    """Band width; a zero-width band (a 0/1 flag that must be 0) counts max(1, |bound|) wide."""
    return hi - lo if hi > lo else max(1.0, abs(lo), abs(hi))


def _bands(p: Process) -> dict[tuple[str, int], tuple[float, float]]:
    """Band per (characteristic, step) for the plausibility check; step 0 = any other step.

    At a gated inspection the gate's band; elsewhere the final band widened to
    take in every gate of the characteristic (intermediate values can sit far
    from the final band, e.g. a diameter before grinding).
    """
    out = {}
    for ch in p.characteristics:
        gates = [g for g in p.gates if g.characteristic == ch.name]
        lo = min([ch.lower] + [g.lower for g in gates])
        hi = max([ch.upper] + [g.upper for g in gates])
        out[(ch.name, 0)] = (lo, hi)
        for g in gates:
            if g.step != p.n_steps:
                out[(ch.name, g.step)] = (g.lower, g.upper)
    return out


def _parse(c: pd.DataFrame, plan: _Plan) -> pd.DataFrame:
    """Candidate raw text -> schema dtypes plus what messages need."""
    p = plan.process
    m = plan.mapping
    decimal, thousands = (m.file.decimal, m.file.thousands) if m else (".", "")
    c["batch_id"], bar_from_id = _split_ids(c["id_raw"], plan.pattern)
    bar_given = c["bar_raw"].notna()
    c["bar_id"] = _whole(c["bar_raw"]).where(bar_given, bar_from_id).astype("Int64")
    c["bar_key"] = c["bar_id"].fillna(NO_BAR).astype("int64")
    c["step"] = _whole(c["step_raw"])
    c["variable"] = c["variable_raw"].astype("string")
    c["kind"] = c["kind_raw"].astype("string")
    steps = c["step"].fillna(0).astype("int64").clip(0, p.n_steps).to_numpy()
    fac = np.array([pd.NA] + [s.factory for s in p.steps], dtype=object)
    par = np.array([pd.NA] + [s.partner for s in p.steps], dtype=object)
    c["exp_factory"] = pd.array(fac[steps], dtype="string")
    c["exp_partner"] = pd.array(par[steps], dtype="string")
    if "factory_raw" in c:
        c["factory"], c["partner"] = c["factory_raw"], c["partner_raw"]
    else:
        c["factory"] = c["exp_factory"]
        c["partner"] = pd.Series(m.partner, index=c.index, dtype="string")
    # target unit: the process's for measurements and levers, the file's for events/context
    chars = {ch.name: ch for ch in p.characteristics}
    levers = {lv.name: lv for lv in p.levers}
    var = c["variable"].fillna("")
    is_meas = (c["kind"] == "measurement").fillna(False)
    is_lever = (c["kind"] == "lever").fillna(False)
    c["is_meas"], c["is_lever"] = is_meas, is_lever
    c["char_known"] = var.isin(list(chars))
    c["lever_known"] = var.isin(list(levers))
    unit_of = {n: ch.unit for n, ch in chars.items()}
    lunit_of = {n: lv.unit for n, lv in levers.items()}
    target = c["unit_raw"].astype("string").copy()
    target[is_meas] = var[is_meas].map(unit_of).astype("string")
    target[is_lever] = var[is_lever].map(lunit_of).astype("string")
    c["unit"] = target
    scale, offset, known, conv = _units(c["unit_raw"], target)
    c["unit_known"], c["unit_convertible"] = known, conv
    num = _numbers(c["value_raw"], decimal, thousands)
    c["value_num"] = num
    if c["value_raw"].dtype.kind in "fiub":
        # typed sources (Parquet): no text to quote; messages print the number
        c["value_text"] = pd.Series(pd.NA, index=c.index, dtype="string")
        c["value_present"] = num.notna()
    else:
        c["value_text"] = _text(c["value_raw"])
        c["value_present"] = c["value_text"].notna()
    c["value"] = (num * scale + offset).astype("float64")
    lo = np.full(len(c), -np.inf)
    hi = np.full(len(c), np.inf)
    step_np = c["step"].fillna(0).astype("int64").to_numpy()
    for (name, st), (blo, bhi) in _bands(p).items():
        sel = (is_meas & (var == name)).to_numpy() & (step_np == st if st else True)
        if st == 0:  # steps without a gate of their own
            sel &= ~np.isin(step_np, [g.step for g in p.gates if g.characteristic == name])
        w = PLAUSIBLE_WIDTHS * _width(blo, bhi)
        lo[sel], hi[sel] = blo - w, bhi + w
    lstep = np.zeros(len(c), dtype=np.int64)
    for name, lv in levers.items():
        sel = (is_lever & (var == name)).to_numpy()
        lo[sel], hi[sel], lstep[sel] = lv.lower, lv.upper, lv.step
    c["lo"], c["hi"], c["lever_step"] = lo, hi, lstep
    if plan.ts_format is not None or "factory_raw" in c:
        fmt = plan.ts_format or "ISO8601"
        c["ts_local"], c["timestamp"], c["ts_out"] = _times(c["ts_raw"], fmt, plan.ts_zone)
        typed = c["ts_raw"].dtype.kind == "M" or isinstance(c["ts_raw"].dtype, pd.DatetimeTZDtype)
        c["ts_cut"] = False if typed else _cut_short(c["ts_raw"].astype("string"), fmt)
    else:
        c["ts_out"], c["ts_cut"] = False, False
        c["ts_local"] = pd.Series(pd.NaT, index=c.index, dtype="datetime64[ns]")
        c["timestamp"] = pd.Series(pd.NaT, index=c.index, dtype="datetime64[ns, UTC]")
    c["id_problem"] = _id_problems(c["batch_id"])
    c["variable_problem"] = _id_problems(c["variable"])
    if plan.genealogy_step is not None:
        c["parent_batch"], c["parent_bar"] = _split_ids(c["parent_raw"], plan.pattern)
        c["parent_bar_key"] = c["parent_bar"].fillna(NO_BAR).astype("int64")
        c["parent_problem"] = _id_problems(c["parent_batch"].astype("string"))
    return c


def _id_problems(ids: pd.Series) -> pd.Series:
    """:func:`recovery.data.ids.check_id` per value (<NA> where fine or missing), once per distinct id."""
    from recovery.data.ids import check_id

    s = ids.astype("string")
    uniq = s.dropna().unique()
    why = {v: check_id(v) for v in uniq}
    return s.map({v: r for v, r in why.items() if r is not None}).astype("string")


def _show(v: object, limit: int = 40) -> str:
    """A cell for a message: escapes (NUL, right-to-left marks) visible, long text shortened."""
    import unicodedata

    t = str(v)
    if len(t) > limit:
        t = t[:limit] + "..."
    return "".join(ch if ch.isprintable() and unicodedata.bidirectional(ch) not in ("R", "AL")
                   and not unicodedata.category(ch).startswith("C") else f"\\u{ord(ch):04x}"
                   for ch in t)


# ---------------------------------------------------------------------------
# Validation: a pandera schema; each check has a priority, a source role and a message
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Check:
    code: str
    role: str                                              # which _Source field names the column
    ok: Callable[[pd.DataFrame], pd.Series]                # True where the row passes
    message: Callable[[pd.DataFrame], list[str]]           # for failing rows only


def _g(v: float) -> str:
    return f"{v:.10g}"


def _row_checks(plan: _Plan, now: pd.Timestamp) -> list[_Check]:
    p = plan.process
    mv = (lambda d: (d["is_meas"] | d["is_lever"]))
    pat = plan.pattern.pattern if plan.pattern is not None else None
    idname = "part id" if pat else "batch id"

    def id_msg(d):
        return [f"{idname} is missing" if pd.isna(r) else
                f"part id '{_show(r)}' does not match the pattern {pat}" for r in d["id_raw"]]

    def var_msg(d):
        out = []
        for v, k, kn in zip(d["variable_raw"], d["kind"], d.get("var_known", pd.Series(True, index=d.index))):
            if not kn:
                out.append(f"variable '{_show(v)}' is not in the mapping")
            elif pd.isna(v):
                out.append("variable is missing")
            elif k == "lever":
                out.append(f"unknown lever '{_show(v)}' for process '{p.name}'")
            else:
                out.append(f"unknown characteristic '{_show(v)}' for process '{p.name}'")
        return out

    def value_text(d):
        return [t if not pd.isna(t) else _g(n) for t, n in zip(d["value_text"], d["value_num"])]

    def range_msg(d):
        out = []
        for v, u, lo, hi, k, var, s in zip(d["value"], d["unit"], d["lo"], d["hi"], d["kind"],
                                           d["variable"], d["step"]):
            if k == "lever":
                out.append(f"lever value {_g(v)} {u} is outside its hard bounds [{_g(lo)}, {_g(hi)}] {u}")
            else:
                out.append(f"value {_g(v)} {u} is outside the plausible range [{_g(lo)}, {_g(hi)}] {u} "
                           f"of {var} at step {s} ({PLAUSIBLE_WIDTHS:g} band widths around its band)")
        return out

    checks = [
        _Check("id", "id", lambda d: d["batch_id"].notna() & (d["batch_id"].str.len() > 0).fillna(False),
               id_msg),
        _Check("id_valid", "id", lambda d: d["id_problem"].isna(),
               lambda d: [f"batch id '{_show(v)}' {r}" for v, r in zip(d["batch_id"], d["id_problem"])]),
        _Check("bar", "bar", lambda d: (d["bar_raw"].isna() | d["bar_id"].notna())
               & (d["bar_id"].fillna(0) >= 0),
               lambda d: [f"bar id '{_show(r)}' is not a whole number >= 0" for r in d["bar_raw"]]),
        _Check("ids_agree", "id", lambda d: d["ids_agree"].astype(bool),
               lambda d: [f"part ids disagree across the row's id columns: {a}" for a in d["ids_all"]]),
        _Check("kind", "kind", lambda d: d["kind"].isin(list(KINDS_OF_ROW)).fillna(False)
               | ~d.get("var_known", pd.Series(True, index=d.index)),
               lambda d: [f"kind '{_show(k)}' is not one of {', '.join(KINDS_OF_ROW)}"
                          for k in d["kind_raw"]]),
        _Check("variable_valid", "variable", lambda d: d["variable_problem"].isna(),
               lambda d: [f"variable '{_show(v)}' {r}"
                          for v, r in zip(d["variable"], d["variable_problem"])]),
        _Check("variable", "variable",
               lambda d: d.get("var_known", True) & d["variable"].notna()
               & (~d["is_meas"] | d["char_known"]) & (~d["is_lever"] | d["lever_known"]), var_msg),
        _Check("step", "step", lambda d: d["step"].between(1, p.n_steps).fillna(False),
               lambda d: ["step is missing" if pd.isna(r) else
                          f"step '{_show(r)}' is not a whole number" if pd.isna(s) else
                          f"unknown step {s}: process '{p.name}' has steps 1..{p.n_steps}"
                          for r, s in zip(d["step_raw"], d["step"])]),
        _Check("lever_step", "step",
               lambda d: ~(d["is_lever"] & d["lever_known"]) | (d["lever_step"] == d["step"].fillna(-1)),
               lambda d: [f"lever '{_show(v)}' acts at step {ls}, not {s}"
                          for v, ls, s in zip(d["variable"], d["lever_step"], d["step"])]),
    ]
    if plan.mapping is None:
        checks += [
            _Check("factory", "factory", lambda d: (d["factory"] == d["exp_factory"]).fillna(False),
                   lambda d: [f"factory '{_show(f)}' does not run step {s} ({e} does)"
                              for f, s, e in zip(d["factory"], d["step"], d["exp_factory"])]),
            _Check("partner", "partner", lambda d: (d["partner"] == d["exp_partner"]).fillna(False),
                   lambda d: [f"partner '{_show(f)}' does not own step {s} ({e} does)"
                              for f, s, e in zip(d["partner"], d["step"], d["exp_partner"])]),
        ]
    else:
        # a mapping's partner delivers only the steps it runs, in the factories it lists
        mp, facs = plan.mapping.partner, list(plan.mapping.factories)
        # a missing or unknown step is the "step" check's to report
        no_step = (lambda d: ~d["step"].between(1, p.n_steps).fillna(False))
        checks += [
            _Check("partner", "step", lambda d: no_step(d) | (d["exp_partner"] == mp).fillna(False),
                   lambda d: [f"step {s} ({p.step(int(s)).name}) is run by partner '{_show(e)}', not '{mp}'"
                              for s, e in zip(d["step"], d["exp_partner"])]),
            _Check("factory", "step",
                   lambda d: no_step(d)
                   | (d["exp_factory"].isin(facs) if facs else d["exp_factory"].notna()).fillna(False),
                   lambda d: [f"step {s} ({p.step(int(s)).name}) runs in factory '{_show(e)}', which the "
                              f"mapping's factories {facs} do not list"
                              for s, e in zip(d["step"], d["exp_factory"])]),
        ]
    checks += [
        _Check("unit_missing", "unit", lambda d: d["unit_raw"].notna(), lambda d: ["unit is missing"] * len(d)),
        _Check("unit_known", "unit", lambda d: d["unit_known"] | d["unit_raw"].isna(),
               lambda d: [f"unknown unit '{_show(u)}'" for u in d["unit_raw"]]),
        _Check("unit_convertible", "unit",
               lambda d: d["unit_convertible"] | ~d["unit_known"] | d["unit"].isna(),
               lambda d: [f"unit '{_show(u)}' cannot be converted to '{_show(t)}', the process's unit of {v}"
                          for u, t, v in zip(d["unit_raw"], d["unit"], d["variable"])]),
        _Check("value_missing", "value", lambda d: ~mv(d) | d["value_present"],
               lambda d: ["value is missing"] * len(d)),
        # events and context may carry NaN on purpose; measurements and levers may not
        _Check("value_number", "value",
               lambda d: ~d["value_present"] | np.isfinite(d["value_num"])
               | (~mv(d) & d["value_text"].str.lower().isin(list(_NAN_WORDS)).fillna(False)),
               lambda d: [f"value '{_show(t)}' is not a finite number" for t in value_text(d)]),
    ]
    if plan.ts_format is not None or plan.mapping is None:
        fmt, zone = plan.ts_format or "ISO8601", plan.ts_zone
        if plan.ts_required:
            checks.append(_Check("timestamp_missing", "timestamp", lambda d: d["ts_raw"].notna(),
                                 lambda d: ["timestamp is missing"] * len(d)))
        checks += [
            _Check("timestamp_range", "timestamp", lambda d: ~d["ts_out"].astype(bool),
                   lambda d: [f"timestamp '{_show(t)}' is outside the supported range {TS_MIN:%Y-%m-%d} to "
                              f"{TS_MAX:%Y-%m-%d} (an export placeholder?)" for t in d["ts_raw"]]),
            _Check("timestamp_format", "timestamp", lambda d: d["ts_raw"].isna() | d["ts_local"].notna(),
                   lambda d: [f"timestamp '{_show(t)}' does not match the format '{fmt}'"
                              for t in d["ts_raw"]]),
            _Check("timestamp_cut", "timestamp", lambda d: d["ts_local"].isna() | ~d["ts_cut"].astype(bool),
                   lambda d: [f"timestamp '{_show(t)}' is cut short: its last field has too few digits for "
                              f"the format '{fmt}'" for t in d["ts_raw"]]),
            _Check("timestamp_local", "timestamp", lambda d: d["ts_local"].isna() | d["timestamp"].notna(),
                   lambda d: [f"timestamp '{_show(t)}' does not exist or is ambiguous in {zone} "
                              f"(daylight-saving change)" for t in d["ts_raw"]]),
            _Check("timestamp_future", "timestamp", lambda d: ~(d["timestamp"] > now).fillna(False),
                   lambda d: [f"timestamp {t.isoformat()} is in the future" for t in d["timestamp"]]),
        ]
    if plan.genealogy_step is not None:
        checks.append(_Check("parent_valid", "parent", lambda d: d["parent_problem"].isna(),
                             lambda d: [f"parent batch id '{_show(v)}' {r}"
                                        for v, r in zip(d["parent_batch"], d["parent_problem"])]))
    checks.append(_Check("range", "value",
                         lambda d: ~(mv(d) & np.isfinite(d["value"]))
                         | ((d["value"] >= d["lo"]) & (d["value"] <= d["hi"])), range_msg))
    return checks


def _store_checks(plan: _Plan) -> list[_Check]:
    p = plan.process
    checks = []
    if plan.genealogy_step is not None and plan.genealogy_required:
        ps = plan.genealogy_step
        sname = p.step(ps).name
        checks.append(_Check(
            "genealogy", "parent", lambda d: d["parent_found"].astype(bool),
            lambda d: [f"genealogy: part {r} has no record at step {ps} ({sname}); "
                       f"ingest that step's data first" for r in d["parent_raw"]]))
    checks.append(_Check(
        "conflict", "value", lambda d: ~d["stored"] | d["same"],
        lambda d: [(f"conflicts with value {_g(v)} {u} on line {n} of this file" if own else
                    f"conflicts with stored value {_g(v)} {u} from {src}")
                   for v, u, src, n, own in zip(d["stored_value"], d["unit"], d["stored_source"],
                                                d["stored_row"], d["stored_here"])]))
    return checks


def _schema(checks: list[_Check]):
    import pandera.pandas as pa

    # The typed columns are the schema's; the rest are what the checks read.
    cols = {
        "batch_id": pa.Column("string", nullable=True),
        "bar_id": pa.Column("Int64", nullable=True),
        "step": pa.Column("Int64", nullable=True),
        "variable": pa.Column("string", nullable=True),
        "kind": pa.Column("string", nullable=True),
        "value": pa.Column("float64", nullable=True),
        "unit": pa.Column("string", nullable=True),
        "timestamp": pa.Column("datetime64[ns, UTC]", nullable=True),
    }
    return pa.DataFrameSchema(
        cols, checks=[pa.Check(lambda d, ch=ch: ch.ok(d).astype(bool), error=ch.code, name=ch.code)
                      for ch in checks],
        strict=False, coerce=False)


def _failures(c: pd.DataFrame, checks: list[_Check], schema, sources: list[_Source]) -> pd.DataFrame:
    """Validate with pandera; one row per failing (candidate, check): pos, row, prio, column, reason."""
    import pandera.errors as pe

    empty = pd.DataFrame({"pos": pd.Series([], dtype="int64"), "row": pd.Series([], dtype="int64"),
                          "prio": pd.Series([], dtype="int64"), "src": pd.Series([], dtype="int64"),
                          "column": pd.Series([], dtype="str"), "reason": pd.Series([], dtype="str")})
    try:
        schema.validate(c, lazy=True)
        return empty
    except pe.SchemaErrors as exc:
        fc = exc.failure_cases
    prio = {ch.code: i for i, ch in enumerate(checks)}
    bad = fc[fc["check"].isin(list(prio))]
    other = fc[~fc["check"].isin(list(prio))]
    if len(other):  # a dtype failure is a bug in the mapping code, not in the partner's data
        raise RuntimeError(f"candidate frame does not match its schema:\n{other.head().to_string()}")
    bad = bad[["index", "check"]].dropna().drop_duplicates()
    out = []
    for ch in checks:
        pos = bad.loc[bad["check"] == ch.code, "index"].astype("int64").to_numpy()
        if not len(pos):
            continue
        d = c.iloc[pos]
        out.append(pd.DataFrame({
            "pos": pos, "row": d["_row"].to_numpy(), "prio": prio[ch.code],
            "src": d["_src"].to_numpy().astype("int64"),
            "column": [getattr(sources[k], ch.role) for k in d["_src"]],
            "reason": ch.message(d)}))
    return pd.concat(out, ignore_index=True) if out else empty


# ---------------------------------------------------------------------------
# The quarantine file
# ---------------------------------------------------------------------------

# A spreadsheet runs a cell starting with one of these as a formula
# (=HYPERLINK(...), +cmd|..., @SUM(...)); OWASP's CSV-injection advice: prefix a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ... except plain numbers, so negative values stay numbers for the reader
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?")
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", __import__("socket").gethostname()) or "host"
_PARTIAL = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.partial$")


def neutralise_cell(cell: object) -> object:
    """A quarantine cell safe to open in a spreadsheet.

    Text starting with ``= + - @``, a tab or a carriage return gets a leading
    ``'`` (OWASP CSV injection), so ``=HYPERLINK(...)`` is shown, not run; plain
    numbers such as ``-16,1`` are left as they are. Other cells are unchanged.

    Examples
    --------
    >>> print(neutralise_cell('=HYPERLINK("http://x","y")'))
    '=HYPERLINK("http://x","y")
    >>> neutralise_cell("-16,1")
    '-16,1'
    """
    if isinstance(cell, str) and cell.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


class _QuarantineWriter:
    """csv.writer whose text cells are neutralised (:func:`neutralise_cell`)."""

    def __init__(self, f):
        self._w = csv.writer(f)

    def writerow(self, cells: list) -> None:
        self._w.writerow([neutralise_cell(c) for c in cells])


def _remove_stale_partials(folder: Path) -> None:
    """Remove the temporary quarantine files that ingests killed on this machine left.

    A temporary file is named ``.<name>.<host>.<pid>.partial``; it is stale when
    its process is gone (files of other hosts, on a shared folder, are left alone).
    ``<name>.partial`` files of earlier versions, which had no owner, go too.
    """
    for f in folder.glob("*.partial"):
        m = _PARTIAL.match(f.name)
        if m is None:
            if f.name.endswith(".csv.partial"):
                f.unlink(missing_ok=True)
            continue
        if m["host"] != _HOST:
            continue
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except (PermissionError, OverflowError):
            pass  # alive under another user (or no such pid at all): not ours to judge


# ---------------------------------------------------------------------------
# The ingest
# ---------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _reader(path: Path, mapping: PartnerMapping | None):
    if mapping is not None:
        f = mapping.file
        if f.format == "parquet":
            return _ParquetReader(path)
        return _CsvReader(path, encoding=f.encoding, separator=f.separator,
                          header_line=f.header_line, data_line=f.data_line)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _ParquetReader(path)
    if suffix == ".csv":
        return _CsvReader(path, encoding="utf-8", separator=",", header_line=1, data_line=2)
    raise IngestError(f"{path}: without --mapping the file must be step data in the schema, "
                      f"as .parquet or .csv; got '{suffix or 'no suffix'}'")


def _plan(process: Process, mapping: PartnerMapping | None, layout: _Layout) -> _Plan:
    if mapping is None:
        missing = [c for c in COLUMNS if c not in (layout.header or [])]
        if missing:
            raise IngestError(f"{layout.path}: not in the step-data schema: missing column(s) "
                              f"{missing}; a partner file needs --mapping")
        extra = [c for c in (layout.header or []) if c.strip() and c not in COLUMNS]
        if extra:
            raise IngestError(f"{layout.path}: not in the step-data schema: unexpected column(s) "
                              f"{extra}; a partner file needs --mapping")
        build, sources = _schema_plan(layout)
        return _Plan(process, None, layout, sources, build, ts_format="ISO8601")
    build, sources = (_wide_plan if mapping.shape == "wide" else _long_plan)(mapping, layout)
    spec = {(vc.step, vc.variable, vc.kind): vc.specified for vc in mapping.columns}
    if mapping.long:
        spec.update({(v.step, v.variable, v.kind): v.specified for v in mapping.long.variables})
    ts = mapping.timestamp
    gen = mapping.genealogy
    return _Plan(process, mapping, layout, sources, build,
                 pattern=re.compile(mapping.ids.pattern) if mapping.ids.pattern else None,
                 ts_format=ts.format if ts else None, ts_zone=ts.timezone if ts else "UTC",
                 ts_required=ts is not None,
                 genealogy_step=gen.parent_step if gen else None,
                 genealogy_required=bool(gen and gen.required), specified=spec)


def ingest(source: str | Path, *, store: Store, mapping: str | Path | PartnerMapping | None = None,
           process: str | Path | Process | None = None, quarantine: str | Path | None = None,
           chunk_rows: int = 100_000, progress: bool = False,
           now: datetime | None = None) -> IngestResult:
    """Validate a file and store its accepted rows; write rejects to a quarantine file.

    Parameters
    ----------
    source : str or Path
        CSV or Parquet file.
    store : Store
        Where accepted rows go (see :func:`recovery.data.store.open_store`).
    mapping : str, Path or PartnerMapping, optional
        The partner's mapping. Without one, the file must already be in the
        step-data schema (as the simulator writes it).
    process : str, Path or Process, optional
        Process of a schema file (``default``, ``small`` or a path; default
        ``default``). A mapping names its own process.
    quarantine : str or Path, optional
        The quarantine CSV to write. Default: a file named after the source in
        :func:`default_quarantine_dir`.
    chunk_rows : int
        Source rows per chunk (memory grows with it, not with the file).
    progress : bool
        Show a progress bar on stderr.
    now : datetime, optional
        Ingestion time (UTC); timestamps after it plus a day are rejected.

    Returns
    -------
    IngestResult

    Raises
    ------
    IngestError
        The file cannot be read at all; the store is unchanged.
    recovery.data.mapping.MappingError
        The mapping is malformed or does not fit its process.

    Examples
    --------
    >>> from recovery.data.store import open_store
    >>> with open_store("duckdb://:memory:") as st:             # doctest: +SKIP
    ...     r = ingest("history.parquet", store=st, process="small")
    ...     r.accepted == r.rows
    True
    """
    from tqdm import tqdm

    m = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping
    # messages name the file as the user gave it; the store records where it really is
    path = Path(source)
    if path.is_symlink() and not path.exists():
        raise IngestError(f"{path}: is a symbolic link to a missing file ({os.readlink(path)})")
    real = path.resolve()
    if path.is_dir():
        raise IngestError(f"{path}: is a folder (ingest_folder reads a folder of Parquet parts)")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise IngestError(f"{path}: the file is empty")
    if m is not None:
        proc = m.process
    elif isinstance(process, Process):
        proc = process
    else:
        proc = load_process(process)
    reader = _reader(path, m)
    plan = _plan(proc, m, reader.layout)
    started = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    now_ts = pd.Timestamp(started + FUTURE_SLACK)
    checks1 = _row_checks(plan, now_ts)
    checks2 = _store_checks(plan)
    schema1, schema2 = _schema(checks1), _schema(checks2)
    sha = _sha256(path)
    qpath = Path(quarantine) if quarantine else (
        default_quarantine_dir() / f"{path.stem}.{started:%Y%m%dT%H%M%S}.{sha[:8]}.quarantine.csv")
    qpath.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(qpath.parent)
    qtmp = qpath.with_name(f".{qpath.name}.{_HOST}.{os.getpid()}.partial")

    tally = _Tally()
    bar = tqdm(total=reader.total, unit="B" if isinstance(reader, _CsvReader) else "row",
               unit_scale=True, desc=f"ingest {path.name}", disable=None if progress else True,
               leave=False)
    renamed = False
    try:
        with store.transaction(), open(qtmp, "w", encoding="utf-8", newline="") as qf:
            store.register_process(proc)
            iid = store.add_ingest(IngestRecord(
                process=proc.name, process_digest=proc.digest, source_path=str(real),
                source_sha256=sha, source_bytes=size, mapping_path=str(m.path) if m else None,
                mapping_sha256=m.sha256 if m else None, partner=m.partner if m else None,
                ingested_at=started))
            qw = _QuarantineWriter(qf)
            qw.writerow(["row", "column", "reason"] + reader.layout.labels)
            for chunk in reader.chunks(chunk_rows, bar.update):
                _chunk(chunk, plan, store, iid, checks1, checks2, schema1, schema2, tally, qw, path)
            if tally.rows == 0:
                raise IngestError(f"{path}: the file has no data rows")
            store.add_variables(tally.variables(iid, proc.name))
            store.finish_ingest(iid, source_rows=tally.rows, accepted=tally.accepted,
                                rejected=tally.rejected, duplicates=tally.duplicates)
            if tally.rejected:
                store.add_quarantine(iid, str(qpath.resolve()), tally.rejected)
                # renamed before the store commits: a crash in between leaves a quarantine
                # file of an ingest that never happened (re-run writes it again), never an
                # ingest whose rejected rows are nowhere
                qf.flush()
                os.fsync(qf.fileno())
                qf.close()
                os.replace(qtmp, qpath)
                renamed = True
    except BaseException:
        for f in (qtmp, qpath if renamed else None):
            if f is not None and f.exists():
                f.unlink()
        raise
    finally:
        bar.close()
    if qtmp.exists():
        qtmp.unlink()
    return IngestResult(source=path, process=proc.name, rows=tally.rows, accepted=tally.accepted,
                        rejected=tally.rejected, duplicates=tally.duplicates, stored=tally.stored,
                        quarantine=qpath.resolve() if tally.rejected else None,
                        reasons=tuple(tally.reasons), ingest_id=iid)


@dataclass
class _Tally:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    stored: int = 0
    reasons: list = field(default_factory=list)
    seen: dict = field(default_factory=dict)   # (step, variable, kind) -> (source col, source unit, unit)
    specified: dict = field(default_factory=dict)

    def variables(self, iid: int, process: str) -> pd.DataFrame:
        rows = [(iid, process, s, v, k, col, su, u, self.specified.get((s, v, k), True))
                for (s, v, k), (col, su, u) in sorted(self.seen.items())]
        return pd.DataFrame(rows, columns=["ingest_id", "process", "step", "variable", "kind",
                                           "source_column", "source_unit", "unit", "specified"])


def _chunk(ch: _Chunk, plan: _Plan, store: Store, iid: int, checks1, checks2, schema1, schema2,
           tally: _Tally, qw, path: Path) -> None:
    p = plan.process
    n_rows = len(ch.rows)
    c = _parse(plan.build(ch), plan)
    c.index = pd.RangeIndex(len(c))
    f1 = _failures(c, checks1, schema1, plan.sources)
    bad_rows = set(f1["row"].tolist())
    ok = ~c["_row"].isin(bad_rows)

    # -- against the store and earlier rows: genealogy, duplicates, conflicts ---
    d = c[ok].copy()
    d["pos"] = np.arange(len(d), dtype=np.int64)
    d.index = pd.RangeIndex(len(d))
    d["process"] = p.name
    key = ["process", "batch_id", "bar_key", "step", "variable", "kind"]
    keys = d[["pos"] + key].astype({"batch_id": str, "variable": str, "kind": str,
                                    "step": "int64", "process": str})
    hits = store.stored_values(keys)
    d["in_store"] = False
    d["db_value"] = np.nan
    d["stored_source"] = ""
    d["db_row"] = 0
    d["db_here"] = False
    if len(hits):
        hits = hits.drop_duplicates("pos").set_index("pos")
        sel = d["pos"].isin(hits.index)
        hp = d.loc[sel, "pos"]
        d.loc[sel, "in_store"] = True
        d.loc[sel, "db_value"] = hits.loc[hp, "value"].to_numpy()
        d.loc[sel, "stored_source"] = hits.loc[hp, "source_path"].to_numpy()
        d.loc[sel, "db_row"] = hits.loc[hp, "source_row"].to_numpy()
        d.loc[sel, "db_here"] = (hits.loc[hp, "ingest_id"] == iid).to_numpy()
    if plan.genealogy_step is not None:
        d["parent_batch"] = d["parent_batch"].astype("string")
        parents = pd.DataFrame({"pos": d["pos"], "batch_id": d["parent_batch"].astype(str),
                                "bar_key": d["parent_bar_key"], "step": plan.genealogy_step})
        parents = parents[d["parent_batch"].notna().to_numpy()]
        d["parent_in_store"] = d["pos"].isin(set(store.parts_at_step(p.name, parents)["pos"].tolist()))
    # Rows are judged as if one at a time, in file order: a row is compared only
    # with the store and with the rows *accepted* before it, so a row rejected later
    # (for a conflict or its genealogy) never makes a later row a duplicate or a
    # conflict, and the verdicts do not depend on the chunk size (the rows accepted
    # in earlier chunks are in the store). A row's verdict depends only on earlier
    # rows, so iterating "verdicts given the accepted set" settles, row by row, in
    # at most one pass per row; in practice in one or two.
    codes = keys.groupby(key, sort=False).ngroup().to_numpy(dtype=np.int64) if len(d) else \
        np.zeros(0, dtype=np.int64)
    accepted = set(d["_row"].tolist())
    for _ in range(n_rows + 1):
        _resolve(d, codes, accepted, plan)
        f2 = _failures(d, checks2, schema2, plan.sources)
        now_accepted = set(d["_row"].tolist()) - set(f2["row"].tolist())
        if now_accepted == accepted:
            break
        accepted = now_accepted

    # -- verdicts per source row ---------------------------------------------
    f2["prio"] += len(checks1)
    fails = pd.concat([f1, f2], ignore_index=True).sort_values(["row", "prio", "src"], kind="stable")
    first_fail = fails.drop_duplicates("row", keep="first")
    rejected = set(first_fail["row"].tolist())
    keep = d[~d["_row"].isin(rejected)]
    dup = keep.groupby("_row")["stored"].all()
    n_rej = len(rejected)
    n_dup = int(dup.sum())
    tally.rows += n_rows
    tally.rejected += n_rej
    tally.duplicates += n_dup
    tally.accepted += n_rows - n_rej - n_dup

    new = keep[~keep["stored"]]
    if len(new):
        obs = pd.DataFrame({
            "process": p.name, "batch_id": new["batch_id"].astype(str), "bar_id": new["bar_id"],
            "bar_key": new["bar_key"], "step": new["step"].astype("int64"),
            "factory": new["factory"].astype(str), "partner": new["partner"].astype(str),
            "variable": new["variable"].astype(str), "value": new["value"],
            "unit": new["unit"].astype(str), "kind": new["kind"].astype(str),
            "observed_ns": _ns(new["timestamp"]), "ingest_id": iid, "source_row": new["_row"]})
        store.add_observations(obs)
        tally.stored += len(obs)
    if plan.genealogy_step is not None and len(keep):
        k = keep[keep["parent_batch"].notna()]
        store.add_links(pd.DataFrame({
            "process": p.name, "parent_batch": k["parent_batch"].astype(str),
            "parent_bar": k["parent_bar_key"], "parent_step": plan.genealogy_step,
            "child_batch": k["batch_id"].astype(str), "child_bar": k["bar_key"],
            "child_step": k["step"].astype("int64"), "partner": k["partner"].astype(str),
            "ingest_id": iid}))
    if len(keep):
        for (s, v, kd, src, su, u) in keep[["step", "variable", "kind", "_src", "unit_raw", "unit"]] \
                .drop_duplicates(["step", "variable", "kind"]).itertuples(index=False):
            k3 = (int(s), str(v), str(kd))
            if k3 not in tally.seen:
                tally.seen[k3] = (plan.sources[int(src)].value, str(su), str(u))
                tally.specified[k3] = plan.specified.get(k3, True)

    # -- quarantine -------------------------------------------------------------
    if n_rej:
        pos_of_row = pd.Series(np.arange(n_rows), index=ch.rows)
        q = first_fail.sort_values("row")
        raw = ch.raw.iloc[pos_of_row.loc[q["row"]].to_numpy()]
        for (row, col, reason), cells in zip(q[["row", "column", "reason"]].itertuples(index=False),
                                             raw.itertuples(index=False)):
            qw.writerow([int(row), col, reason] + ["" if _isna(x) else x for x in cells])
        room = MAX_REASONS - len(tally.reasons)
        for row, col, reason in q[["row", "column", "reason"]].head(max(room, 0)).itertuples(index=False):
            tally.reasons.append(Reason(int(row), str(col), str(reason)))


def _resolve(d: pd.DataFrame, codes: np.ndarray, accepted: set, plan: _Plan) -> None:
    """Compare each candidate with the store and with the candidates of the rows in
    ``accepted`` that come before its own row; sets ``stored``, ``stored_value``,
    ``stored_row``, ``stored_here``, ``same`` (and ``parent_found``) in place.

    ``codes`` numbers the candidates' keys (equal key, equal code); the store's
    answers are in ``in_store``, ``db_value``, ``db_row`` and ``db_here``.
    """
    row = d["_row"].to_numpy()
    acc = d["_row"].isin(accepted).to_numpy()
    in_store = d["in_store"].to_numpy(dtype=bool)
    value = d["value"].to_numpy(dtype="float64")
    # the first accepted candidate of each key not in the store sets the value
    never = np.iinfo(np.int64).max
    first_row = np.full(int(codes.max()) + 1 if len(codes) else 0, never, dtype=np.int64)
    cand = acc & ~in_store
    np.minimum.at(first_row, codes[cand], row[cand])
    ref_row = first_row[codes]
    at_first = cand & (row == ref_row)
    first_pos = np.full(len(first_row), -1, dtype=np.int64)
    first_pos[codes[at_first]] = np.flatnonzero(at_first)
    ref_pos = first_pos[codes]
    earlier = ~in_store & (ref_row < row)
    ref_value = np.where(ref_pos >= 0, value[np.maximum(ref_pos, 0)], np.nan)
    d["stored"] = in_store | earlier
    d["stored_value"] = np.where(earlier, ref_value, d["db_value"].to_numpy(dtype="float64"))
    d["stored_row"] = np.where(earlier, ref_row, d["db_row"].to_numpy(dtype=np.int64))
    d["stored_here"] = earlier | d["db_here"].to_numpy(dtype=bool)
    b = d["stored_value"].to_numpy()
    with np.errstate(invalid="ignore"):
        d["same"] = ((np.abs(value - b) <= 1e-12 * np.maximum(1.0, np.abs(b)))
                     | (np.isnan(value) & np.isnan(b)))
    if plan.genealogy_step is None:
        return
    # a parent counts when stored, delivered by an accepted earlier row, or by the row itself
    at = d[d["step"].to_numpy() == plan.genealogy_step]
    part = ["batch_id", "bar_key"]
    first = at[at["_row"].isin(accepted)].groupby(part, as_index=False)["_row"].min() \
        .rename(columns={"batch_id": "parent_batch", "bar_key": "parent_bar_key", "_row": "first_row"})
    own = at[part + ["_row"]].drop_duplicates() \
        .rename(columns={"batch_id": "parent_batch", "bar_key": "parent_bar_key"}).assign(own=True)
    pk = d[["parent_batch", "parent_bar_key", "_row"]]
    f = pk.merge(first, on=["parent_batch", "parent_bar_key"], how="left")
    o = pk.merge(own, on=["parent_batch", "parent_bar_key", "_row"], how="left")
    d["parent_found"] = d["parent_in_store"].to_numpy() \
        | (f["first_row"].to_numpy(dtype="float64") < row) | o["own"].fillna(False).to_numpy(dtype=bool)


def _ns(ts: pd.Series) -> pd.Series:
    """UTC timestamps -> Int64 nanoseconds since the epoch (<NA> for NaT)."""
    ns = pd.Series(ts.to_numpy(dtype="datetime64[ns]").view("int64"), index=ts.index, dtype="Int64")
    return ns.mask(ts.isna().to_numpy())


def _isna(x) -> bool:
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def ingest_folder(folder: str | Path, *, store: Store, mapping: str | Path | PartnerMapping | None = None,
                  process: str | Path | Process | None = None, quarantine: str | Path | None = None,
                  chunk_rows: int = 100_000, progress: bool = False,
                  now: datetime | None = None) -> FolderIngestResult:
    """Ingest every Parquet part of a folder, each as its own source file.

    The parts are the folder's visible ``*.parquet`` files in name order
    (:func:`simulators.campaign.campaign_parts`, the same files
    ``recovery fit --data FOLDER`` reads). Each is one :func:`ingest`, with
    its own provenance (path, sha256), row numbers, transaction and quarantine
    file; a part that cannot be read is recorded in
    :attr:`FolderIngestResult.errors` and the others are still ingested.

    Parameters
    ----------
    folder : str or Path
        A dataset folder, e.g. written by ``recovery simulate --out FOLDER``.
    quarantine : str or Path, optional
        A directory for the quarantine CSVs (``<part>.quarantine.csv``);
        default: :func:`default_quarantine_dir` with :func:`ingest`'s names.
    store, mapping, process, chunk_rows, progress, now
        As for :func:`ingest`.

    Returns
    -------
    FolderIngestResult

    Raises
    ------
    IngestError
        The folder does not exist or holds no Parquet parts.
    """
    from simulators.campaign import campaign_parts

    path = Path(folder)
    if not path.is_dir():
        raise IngestError(f"{path}: no such folder")
    parts = campaign_parts(path)
    if not parts:
        raise IngestError(f"{path}: the folder holds no .parquet files")
    m = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping
    proc = process
    if m is None and not isinstance(process, Process):
        proc = load_process(process)  # once, not once per part
    qdir = Path(quarantine) if quarantine else None
    if qdir is not None and qdir.exists() and not qdir.is_dir():
        raise IngestError(f"{qdir}: the quarantine of a folder must be a directory")
    results, errors = [], []
    for part in parts:
        try:
            results.append(ingest(part, store=store, mapping=m, process=proc,
                                  quarantine=qdir / f"{part.stem}.quarantine.csv" if qdir else None,
                                  chunk_rows=chunk_rows, progress=progress, now=now))
        except IngestError as exc:
            errors.append((part, str(exc)))
    return FolderIngestResult(source=path, parts=tuple(parts), results=tuple(results),
                              errors=tuple(errors))
