"""The columns each ingestion stage adds to the candidate frame, declared once.

A source row becomes one *candidate* per value it carries (a wide row with
three value columns gives three). The candidates of a chunk travel as one
DataFrame through four stages, each adding the columns declared here:

1. :data:`CANDIDATES` (:mod:`.candidates`): raw cells per role, as read;
2. :data:`PARSED` (:mod:`.parsing`): schema dtypes, the process's
   expectations and what the messages quote;
3. :data:`LOOKED_UP` (:mod:`.judging`): the store's answer per key;
4. :data:`RESOLVED` (:mod:`.judging`): the verdict against the store and the
   rows accepted before, row by row in file order.

Each stage calls :meth:`StageColumns.expect` on its output, so a column that
is added without being declared here (or declared and never added) fails
loudly in every test, instead of being read by a check three modules away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import pandas as pd

__all__ = ["StageColumns", "CANDIDATES", "PARSED", "LOOKED_UP", "RESOLVED"]


@dataclass(frozen=True)
class StageColumns:
    """The columns one stage adds, with their meaning.

    Attributes
    ----------
    stage : str
        The stage's name, for messages.
    columns : Mapping[str, str]
        Column -> meaning, always added.
    genealogy : Mapping[str, str]
        Column -> meaning, added only when the mapping declares a genealogy.
    """

    stage: str
    columns: Mapping[str, str]
    genealogy: Mapping[str, str] = field(default_factory=dict)

    def names(self, *, genealogy: bool) -> frozenset[str]:
        """The column names this stage adds."""
        return frozenset(self.columns) | (frozenset(self.genealogy) if genealogy else frozenset())

    def expect(self, frame: pd.DataFrame, *before: StageColumns, genealogy: bool) -> pd.DataFrame:
        """Return ``frame`` when its columns are exactly those of the stages
        ``before`` plus this one; raise RuntimeError (a bug, not bad data) otherwise."""
        want = self.names(genealogy=genealogy).union(*(s.names(genealogy=genealogy) for s in before))
        got = set(frame.columns)
        if got != want:
            raise RuntimeError(f"ingestion stage '{self.stage}': undeclared column(s) "
                               f"{sorted(got - want)}, missing column(s) {sorted(want - got)}")
        return frame


def _frozen(d: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(d)


CANDIDATES = StageColumns("candidates", _frozen({
    "_row": "source row number of the candidate (1-based line for CSV, row for Parquet)",
    "_src": "index into the plan's SourceColumns: which source columns the messages name",
    "id_raw": "batch id or part id cell (stripped text, <NA> when empty)",
    "bar_raw": "bar id cell (<NA> when the file has none)",
    "parent_raw": "parent part id cell for genealogy (else the id cell)",
    "step_raw": "step cell, or the mapping's step",
    "variable_raw": "variable, mapped from the source name when known, else the source name",
    "var_known": "False where a long file's variable is not in the mapping",
    "kind_raw": "kind cell, or the mapping's kind",
    "value_raw": "value cell as read (text for CSV, typed for Parquet)",
    "unit_raw": "unit cell, or the mapping's unit",
    "ts_raw": "timestamp cell (<NA> when the file has none)",
    "factory_raw": "factory cell of a schema file (<NA> with a mapping)",
    "partner_raw": "partner cell of a schema file (<NA> with a mapping)",
    "ids_agree": "False where a row's id columns name different parts",
    "ids_all": "the row's ids joined, for the message when they disagree",
}))

PARSED = StageColumns("parsed", _frozen({
    "batch_id": "batch id (string)",
    "bar_id": "bar id (Int64, <NA> for batch-level rows)",
    "bar_key": "bar id with NO_BAR for <NA>: the store's key",
    "step": "step (Int64, <NA> when not a whole number)",
    "variable": "variable (string)",
    "kind": "kind (string)",
    "exp_factory": "factory that runs the step in the process",
    "exp_partner": "partner that owns that factory",
    "factory": "factory stored: the file's (schema file) or the step's",
    "partner": "partner stored: the file's (schema file) or the mapping's",
    "is_meas": "kind is measurement",
    "is_lever": "kind is lever",
    "char_known": "variable is a characteristic of the process",
    "lever_known": "variable is a lever of the process",
    "unit": "target unit: the process's for measurements and levers, else the file's",
    "unit_known": "the source unit is a unit pint knows",
    "unit_convertible": "the source unit converts to the target unit",
    "value_num": "value as a number in the source unit (NaN when not a number)",
    "value_text": "value cell as text, for messages (<NA> for typed sources)",
    "value_present": "the value cell is not empty",
    "value": "value in the target unit (float64)",
    "lo": "lower end of the plausible range (measurement) or hard bound (lever), target unit",
    "hi": "upper end of the same",
    "lever_step": "step the lever acts at (0 when not a known lever)",
    "ts_local": "timestamp as read, before the time zone (NaT when unreadable)",
    "timestamp": "timestamp in UTC (NaT when missing or not a real local time)",
    "ts_out": "timestamp outside the supported range",
    "ts_cut": "timestamp text cut short in its last field",
    "id_problem": "why the batch id is not acceptable (<NA> when fine)",
    "variable_problem": "why the variable name is not acceptable (<NA> when fine)",
}), _frozen({
    "parent_batch": "parent batch id",
    "parent_bar": "parent bar id (Int64)",
    "parent_bar_key": "parent bar id with NO_BAR for <NA>",
    "parent_problem": "why the parent batch id is not acceptable (<NA> when fine)",
}))

LOOKED_UP = StageColumns("looked up", _frozen({
    "pos": "position among the chunk's candidates that passed the row checks",
    "process": "process name (part of the store's key)",
    "in_store": "the key is stored already",
    "db_value": "the stored value (NaN when not stored)",
    "stored_source": "the file the stored value came from",
    "db_row": "the stored value's source row",
    "db_here": "the stored value came from this ingest",
}), _frozen({
    "parent_in_store": "the parent part has a record at the genealogy step in the store",
}))

RESOLVED = StageColumns("resolved", _frozen({
    "stored": "the key is stored or delivered by an earlier accepted row",
    "stored_value": "the value it has there",
    "stored_row": "the source row it came from",
    "stored_here": "it came from this file",
    "same": "the candidate's value equals it (relative 1e-12)",
}), _frozen({
    "parent_found": "the parent is stored, delivered by an earlier accepted row, or by the row itself",
}))
