"""Judging candidates against the store and the rows accepted before them.

Rows are judged as if one at a time, in file order: a row is compared only
with the store and with the rows *accepted* before it, so a row rejected
later (for a conflict or its genealogy) never makes a later row a duplicate
or a conflict, and the verdicts do not depend on the chunk size (the rows
accepted in earlier chunks are in the store).

:func:`look_up` asks the store once per chunk (columns
:data:`~recovery.data.ingestion.columns.LOOKED_UP`); :func:`settle` then
iterates :func:`resolve` (columns :data:`~recovery.data.ingestion.columns.RESOLVED`)
and the store checks to a fixed point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recovery.data.ingestion.candidates import CandidatePlan
from recovery.data.ingestion.checks import Check, failures
from recovery.data.ingestion.columns import CANDIDATES, LOOKED_UP, PARSED, RESOLVED
from recovery.data.ingestion.distinct import distinct_rows
from recovery.data.store import Store

__all__ = ["KEY", "look_up", "settle", "resolve"]

#: The store's key of one observation.
KEY = ["process", "batch_id", "bar_key", "step", "variable", "kind"]


def look_up(c: pd.DataFrame, plan: CandidatePlan, store: Store, iid: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The candidates ``c`` (those that passed the row checks) with the store's answers.

    Returns
    -------
    d : DataFrame
        ``c`` renumbered, with the columns of :data:`LOOKED_UP`.
    keys : DataFrame
        ``pos`` and :data:`KEY` per candidate, typed as the store wants them.
    """
    p = plan.process
    d = c  # the caller's c[ok], a frame of its own (copy-on-write)
    d["pos"] = np.arange(len(d), dtype=np.int64)
    d.index = pd.RangeIndex(len(d))
    d["process"] = p.name
    keys = d[["pos"] + KEY].astype({"batch_id": str, "variable": str, "kind": str,
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
    if plan.genealogy:
        d["parent_batch"] = d["parent_batch"].astype("string")
        parents = pd.DataFrame({"pos": d["pos"], "batch_id": d["parent_batch"].astype(str),
                                "bar_key": d["parent_bar_key"], "step": plan.genealogy_step})
        parents = parents[d["parent_batch"].notna().to_numpy()]
        d["parent_in_store"] = d["pos"].isin(set(store.parts_at_step(p.name, parents)["pos"].tolist()))
    return LOOKED_UP.expect(d, CANDIDATES, PARSED, genealogy=plan.genealogy), keys


def settle(d: pd.DataFrame, keys: pd.DataFrame, plan: CandidatePlan, checks: list[Check], schema,
           n_rows: int) -> pd.DataFrame:
    """Resolve ``d`` in place until the accepted rows no longer change; the store checks' failures.

    A row's verdict depends only on earlier rows, so iterating "verdicts given
    the accepted set" settles, row by row, in at most one pass per row
    (``n_rows``); in practice in one or two.
    """
    codes = distinct_rows([keys[k] for k in KEY])[0] if len(d) else np.zeros(0, dtype=np.int64)
    accepted = set(d["_row"].tolist())
    for _ in range(n_rows + 1):
        resolve(d, codes, accepted, plan)
        RESOLVED.expect(d, CANDIDATES, PARSED, LOOKED_UP, genealogy=plan.genealogy)
        f2 = failures(d, checks, schema, plan.sources)
        now_accepted = set(d["_row"].tolist()) - set(f2["row"].tolist())
        if now_accepted == accepted:
            break
        accepted = now_accepted
    return f2


def resolve(d: pd.DataFrame, codes: np.ndarray, accepted: set, plan: CandidatePlan) -> None:
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
    if not plan.genealogy:
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
