"""Mapping: raw chunks -> candidate rows of the step-data schema.

A :class:`CandidatePlan` is resolved once per file from the mapping (wide or
long) or, for a file already in the schema, from its header. Its ``build``
turns a :class:`~recovery.data.ingestion.reading.RawChunk` into one candidate
per value a source row carries, with the columns
:data:`~recovery.data.ingestion.columns.CANDIDATES` declares: raw cells per
role, no verdicts yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from recovery.data.ingestion.columns import CANDIDATES
from recovery.data.ingestion.reading import FileColumns, RawChunk
from recovery.data.ingestion.results import IngestError
from recovery.data.mapping import PartnerMapping
from simulators.definition import Process
from simulators.schema import COLUMNS, StepRules

__all__ = ["SourceColumns", "CandidatePlan", "make_plan", "text_cells"]


@dataclass(frozen=True)
class SourceColumns:
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
class CandidatePlan:
    """Everything needed to turn a raw chunk into candidates, resolved once per file."""

    process: Process
    mapping: PartnerMapping | None
    layout: FileColumns
    sources: list[SourceColumns]
    build: Callable[[RawChunk], pd.DataFrame]
    pattern: re.Pattern | None = None
    ts_format: str | None = None
    ts_zone: str = "UTC"
    ts_required: bool = False
    genealogy_step: int | None = None
    genealogy_required: bool = False
    specified: dict = field(default_factory=dict)   # (step, variable, kind) -> mapping's `specified`
    rules: StepRules = field(init=False)             # the step table's rules for the process

    def __post_init__(self):
        self.rules = StepRules(self.process)

    @property
    def genealogy(self) -> bool:
        """The mapping declares a genealogy (the parent columns are added)."""
        return self.genealogy_step is not None


def text_cells(s: pd.Series) -> pd.Series:
    """Cells as stripped strings, <NA> where empty."""
    if s.dtype.kind in "fiub" or isinstance(s.dtype, pd.DatetimeTZDtype) or s.dtype.kind == "M":
        out = s.astype("string")
    else:
        out = s.astype("string").str.strip()
    return out.mask(out == "")


Build = Callable[[RawChunk], pd.DataFrame]


def _wide_plan(m: PartnerMapping, layout: FileColumns) -> tuple[Build, list[SourceColumns]]:
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

    def build(ch: RawChunk) -> pd.DataFrame:
        raw = ch.raw
        n = len(raw)
        na = pd.Series(pd.NA, index=raw.index, dtype="string")
        ts = text_cells(raw[ts_i]) if ts_i is not None else pd.Series(pd.NA, index=raw.index, dtype="string")
        bar = text_cells(raw[bar_i]) if bar_i is not None else pd.Series(pd.NA, index=raw.index, dtype="string")
        all_ids, ref = None, None
        if len(agree_i) > 1:
            parts = [text_cells(raw[i]).fillna("") for i in agree_i]
            ref = parts[0]
            all_ids = parts[0].str.cat(parts[1:], sep=", ")
        frames = []
        for k, (vc, vi, pi) in enumerate(cols):
            # the value whose own id differs from the row's first id column is the one at fault
            agree = (text_cells(raw[pi]).fillna("") == ref).to_numpy() if ref is not None \
                else np.ones(n, dtype=bool)
            frames.append(pd.DataFrame({
                "_row": ch.rows, "_src": np.int16(k), "id_raw": text_cells(raw[pi]), "bar_raw": bar,
                "parent_raw": text_cells(raw[par_i]) if par_i is not None else text_cells(raw[pi]),
                "step_raw": pd.Series(str(vc.step), index=raw.index, dtype="string"),
                "variable_raw": pd.Series(vc.variable, index=raw.index, dtype="string"),
                "kind_raw": pd.Series(vc.kind, index=raw.index, dtype="string"),
                "value_raw": raw[vi], "unit_raw": pd.Series(vc.unit, index=raw.index, dtype="string"),
                "ts_raw": ts, "ids_agree": agree,
                "ids_all": all_ids if all_ids is not None else pd.Series(pd.NA, index=raw.index, dtype="string"),
                "var_known": True, "factory_raw": na, "partner_raw": na,
            }))
        return pd.concat(frames, ignore_index=True)

    sources = [SourceColumns(value=lab(vc.column), id=lab(vc.part if vc.part is not None else id_ref),
                       bar=lab(ids.bar) if ids.bar is not None else "",
                       variable=lab(vc.column), step=lab(vc.column), kind=lab(vc.column),
                       unit=lab(vc.column), timestamp=lab(m.timestamp.column) if m.timestamp else "",
                       parent=lab(m.genealogy.parent) if par_i is not None else
                       lab(vc.part if vc.part is not None else id_ref))
               for vc in m.columns]
    return build, sources


def _long_plan(m: PartnerMapping, layout: FileColumns) -> tuple[Build, list[SourceColumns]]:
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

    def build(ch: RawChunk) -> pd.DataFrame:
        raw = ch.raw
        na = pd.Series(pd.NA, index=raw.index, dtype="string")
        src = text_cells(raw[var_i])
        known = src.isin(list(table))
        variable = src.map(to_var).astype("string")
        unit = text_cells(raw[unit_i]) if unit_i is not None else src.map(to_unit).astype("string")
        step = text_cells(raw[step_i]) if step_i is not None else src.map(to_step).astype("string")
        kind = text_cells(raw[kind_i]) if kind_i is not None else src.map(to_kind).astype("string")
        return pd.DataFrame({
            "_row": ch.rows, "_src": np.int16(0), "id_raw": text_cells(raw[id_i]),
            "bar_raw": text_cells(raw[bar_i]) if bar_i is not None else na,
            "parent_raw": text_cells(raw[par_i]) if par_i is not None else text_cells(raw[id_i]),
            "step_raw": step, "variable_raw": variable.where(known, src), "var_known": known,
            "kind_raw": kind, "value_raw": raw[val_i], "unit_raw": unit,
            "ts_raw": text_cells(raw[ts_i]) if ts_i is not None else na,
            "ids_agree": True, "ids_all": na, "factory_raw": na, "partner_raw": na,
        })

    sources = [SourceColumns(value=lab(lg.value), id=lab(id_ref),
                       bar=lab(ids.bar) if ids.bar is not None else "",
                       variable=lab(lg.variable),
                       step=lab(lg.step) if lg.step is not None else lab(lg.variable),
                       kind=lab(lg.kind) if lg.kind is not None else lab(lg.variable),
                       unit=lab(lg.unit) if lg.unit is not None else lab(lg.variable),
                       timestamp=lab(m.timestamp.column) if m.timestamp else "",
                       parent=lab(m.genealogy.parent) if par_i is not None else lab(id_ref))]
    return build, sources


def _schema_plan(layout: FileColumns) -> tuple[Build, list[SourceColumns]]:
    ix = {c: layout.index(c) for c in COLUMNS}

    def build(ch: RawChunk) -> pd.DataFrame:
        raw = ch.raw
        na = pd.Series(pd.NA, index=raw.index, dtype="string")
        return pd.DataFrame({
            "_row": ch.rows, "_src": np.int16(0), "id_raw": text_cells(raw[ix["batch_id"]]),
            "bar_raw": text_cells(raw[ix["bar_id"]]) if raw[ix["bar_id"]].dtype.kind == "O" else raw[ix["bar_id"]],
            "parent_raw": na,
            "step_raw": text_cells(raw[ix["step"]]) if raw[ix["step"]].dtype.kind == "O" else raw[ix["step"]],
            "variable_raw": text_cells(raw[ix["variable"]]), "kind_raw": text_cells(raw[ix["kind"]]),
            "value_raw": raw[ix["value"]], "unit_raw": text_cells(raw[ix["unit"]]),
            "ts_raw": text_cells(raw[ix["timestamp"]]) if raw[ix["timestamp"]].dtype.kind == "O"
            else raw[ix["timestamp"]], "factory_raw": text_cells(raw[ix["factory"]]),
            "partner_raw": text_cells(raw[ix["partner"]]), "ids_agree": True, "ids_all": na,
            "var_known": True,
        })

    return build, [SourceColumns(value="value", id="batch_id", bar="bar_id", variable="variable",
                           step="step", kind="kind", unit="unit", timestamp="timestamp",
                           factory="factory", partner="partner")]


def make_plan(process: Process, mapping: PartnerMapping | None, layout: FileColumns) -> CandidatePlan:
    """The plan for a file: from the mapping, or from the header of a schema file.

    Raises
    ------
    IngestError
        A schema file misses schema columns or has others.
    """
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
        return CandidatePlan(process, None, layout, sources, _declared(build), ts_format="ISO8601")
    build, sources = (_wide_plan if mapping.shape == "wide" else _long_plan)(mapping, layout)
    spec = {(vc.step, vc.variable, vc.kind): vc.specified for vc in mapping.columns}
    if mapping.long:
        spec.update({(v.step, v.variable, v.kind): v.specified for v in mapping.long.variables})
    ts = mapping.timestamp
    gen = mapping.genealogy
    return CandidatePlan(process, mapping, layout, sources, _declared(build),
                         pattern=re.compile(mapping.ids.pattern) if mapping.ids.pattern else None,
                         ts_format=ts.format if ts else None, ts_zone=ts.timezone if ts else "UTC",
                         ts_required=ts is not None,
                         genealogy_step=gen.parent_step if gen else None,
                         genealogy_required=bool(gen and gen.required), specified=spec)


def _declared(build: Build) -> Build:
    """``build`` whose output is held to :data:`CANDIDATES`."""
    return lambda ch: CANDIDATES.expect(build(ch), genealogy=False)
