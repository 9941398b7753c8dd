"""The store's tables: their DDL, column sets and the conversions of what the engines return."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from simulators.schema import COLUMNS


#: A bar-less (batch-level) row gets this bar key, so the uniqueness key has no NULL in it
#: (NULL never equals NULL in SQL, and PostgreSQL cannot use an index on IS NOT DISTINCT FROM).
NO_BAR = -1

#: Every table, in the order :meth:`Store.counts` lists them.
TABLES = ["processes", "ingests", "observations", "links", "variables", "quarantine",
          "model_versions", "recommendations", "decisions", "tokens", "audit", "handovers",
          "decision_heads", "idempotency", "assessments"]

OBS_COLUMNS = ["process", "batch_id", "bar_id", "bar_key", "step", "factory", "partner",
                "variable", "value", "unit", "kind", "observed_ns", "ingest_id", "source_row"]
LINK_COLUMNS = ["process", "parent_batch", "parent_bar", "parent_step", "child_batch",
                 "child_bar", "child_step", "partner", "ingest_id"]
VARIABLE_COLUMNS = ["ingest_id", "process", "step", "variable", "kind", "source_column",
                     "source_unit", "unit", "specified"]
KEY = ["process", "batch_id", "bar_key", "step", "variable", "kind"]


def ddl(dialect: str) -> list[str]:
    # DuckDB keeps uniqueness of observations by the anti-join in the ingest (it is
    # single-writer); an ART index over millions of text keys would cost more memory
    # than the whole ingest. PostgreSQL gets the primary key, which also makes two
    # concurrent ingests of the same rows fail instead of both writing.
    obs_key = ", PRIMARY KEY (process, batch_id, bar_key, step, variable, kind)" \
        if dialect == "postgresql" else ""
    return [
        "CREATE SEQUENCE IF NOT EXISTS recovery_ids START 1",
        """CREATE TABLE IF NOT EXISTS processes (
            name TEXT NOT NULL, digest TEXT NOT NULL, version TEXT, source TEXT,
            definition TEXT NOT NULL, stored_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (name, digest))""",
        """CREATE TABLE IF NOT EXISTS ingests (
            id BIGINT PRIMARY KEY, process TEXT NOT NULL, process_digest TEXT NOT NULL,
            source_path TEXT NOT NULL, source_sha256 TEXT NOT NULL, source_bytes BIGINT NOT NULL,
            mapping_path TEXT, mapping_sha256 TEXT, partner TEXT,
            ingested_at TIMESTAMPTZ NOT NULL, source_rows BIGINT, accepted BIGINT,
            rejected BIGINT, duplicates BIGINT)""",
        f"""CREATE TABLE IF NOT EXISTS observations (
            process TEXT NOT NULL, batch_id TEXT NOT NULL, bar_id BIGINT, bar_key BIGINT NOT NULL,
            step BIGINT NOT NULL, factory TEXT NOT NULL, partner TEXT NOT NULL,
            variable TEXT NOT NULL, value DOUBLE PRECISION, unit TEXT NOT NULL,
            kind TEXT NOT NULL, observed_ns BIGINT, ingest_id BIGINT NOT NULL,
            source_row BIGINT NOT NULL{obs_key})""",
        """CREATE TABLE IF NOT EXISTS links (
            process TEXT NOT NULL, parent_batch TEXT NOT NULL, parent_bar BIGINT NOT NULL,
            parent_step BIGINT NOT NULL, child_batch TEXT NOT NULL, child_bar BIGINT NOT NULL,
            child_step BIGINT NOT NULL, partner TEXT, ingest_id BIGINT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS variables (
            ingest_id BIGINT NOT NULL, process TEXT NOT NULL, step BIGINT NOT NULL,
            variable TEXT NOT NULL, kind TEXT NOT NULL, source_column TEXT,
            source_unit TEXT, unit TEXT, specified BOOLEAN NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS quarantine (
            ingest_id BIGINT PRIMARY KEY, path TEXT NOT NULL, rows BIGINT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS model_versions (
            id BIGINT PRIMARY KEY, process TEXT NOT NULL, name TEXT NOT NULL,
            partner TEXT, parameters TEXT, artifact TEXT, created_at TIMESTAMPTZ NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS recommendations (
            id BIGINT PRIMARY KEY, process TEXT NOT NULL, batch_id TEXT NOT NULL,
            after_step BIGINT NOT NULL, model_version BIGINT, agent TEXT NOT NULL,
            plan TEXT NOT NULL, expected TEXT, partner TEXT, created_at TIMESTAMPTZ NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS decisions (
            id BIGINT PRIMARY KEY, recommendation_id BIGINT, batch_id TEXT NOT NULL,
            engineer TEXT NOT NULL, decision TEXT NOT NULL, plan TEXT, comment TEXT,
            partner TEXT, decided_at TIMESTAMPTZ NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS tokens (
            id BIGINT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, partner TEXT NOT NULL,
            role TEXT NOT NULL, name TEXT, created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ)""",
        """CREATE TABLE IF NOT EXISTS audit (
            id BIGINT PRIMARY KEY, recorded_at TIMESTAMPTZ NOT NULL, actor TEXT NOT NULL,
            partner TEXT, role TEXT, action TEXT NOT NULL, batch_id TEXT,
            model_version TEXT, input_hash TEXT, payload TEXT)""",
        """CREATE TABLE IF NOT EXISTS handovers (
            id BIGINT PRIMARY KEY, process TEXT NOT NULL, batch_id TEXT NOT NULL,
            partner TEXT NOT NULL, actor TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)""",
        # The primary key makes "one final decision per batch and step" hold across
        # processes too (two service workers on one PostgreSQL), not only per lock.
        """CREATE TABLE IF NOT EXISTS decision_heads (
            process TEXT NOT NULL, batch_id TEXT NOT NULL, after_step BIGINT NOT NULL,
            decision_id BIGINT NOT NULL, PRIMARY KEY (process, batch_id, after_step))""",
        """CREATE TABLE IF NOT EXISTS idempotency (
            token_id BIGINT NOT NULL, key TEXT NOT NULL, request_sha256 TEXT NOT NULL,
            status BIGINT, response TEXT, created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (token_id, key))""",
        # The recommendation cache that every service worker shares: a batch's assessment
        # (recommendation, predictions, status) under the hash of its inputs, which names
        # the model version, the seed and the batch's rows, so an entry never goes stale.
        """CREATE TABLE IF NOT EXISTS assessments (
            process TEXT NOT NULL, batch_id TEXT NOT NULL, input_hash TEXT NOT NULL,
            body TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (process, batch_id, input_hash))""",
        "CREATE INDEX IF NOT EXISTS links_child ON links (process, child_batch, child_bar)",
    ]


def now() -> datetime:
    return datetime.now(timezone.utc)


def utc(s: pd.Series) -> pd.Series:
    """Any timestamp column from either engine -> datetime64[ns, UTC]."""
    return pd.to_datetime(s, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")


def filters(*, partner=None, process=None, batch_ids=None, alias="o") -> tuple[str, list]:
    """`` WHERE ...`` (or "") and its parameters for the usual row filters of a reader."""
    conds, params = [], []
    if partner is not None:
        conds.append(f"{alias}.partner = ?")
        params.append(partner)
    if process is not None:
        conds.append(f"{alias}.process = ?")
        params.append(process)
    if batch_ids is not None:
        ids = [str(b) for b in batch_ids]
        if not ids:
            conds.append("1 = 0")
        else:
            conds.append(f"{alias}.batch_id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
    return (" WHERE " + " AND ".join(conds)) if conds else "", params



def list_table(store, table: str, time_col: str, json_cols: list[str], **kw) -> pd.DataFrame:
    """Every row of an append-only table (oldest first), filtered as :func:`filters`, parsed."""
    where, params = filters(alias="t", **kw)
    df = store._frame(f"SELECT * FROM {table} t{where} ORDER BY t.id", params)
    return parsed(df, time_col, json_cols)


def parsed(df: pd.DataFrame, time_col: str, json_cols: list[str]) -> pd.DataFrame:
    """A listed table with its time column as UTC timestamps and its JSON columns parsed."""
    if len(df):
        df[time_col] = utc(df[time_col])
        for c in json_cols:
            df[c] = df[c].map(lambda s: json.loads(s) if isinstance(s, str) else None)
    return df


def as_schema(df: pd.DataFrame, *, provenance: bool) -> pd.DataFrame:
    """Engine result -> the schema's dtypes, column order and the simulator's row order."""
    if not len(df):
        out = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in COLUMNS.items()})
        return out
    out = pd.DataFrame(index=df.index)
    for c, t in COLUMNS.items():
        if c == "timestamp":
            # nanoseconds since the epoch (UTC): SQL timestamps stop at microseconds
            out[c] = from_ns(df[c])
        elif t in ("Int64", "int64"):
            out[c] = pd.to_numeric(df[c], dtype_backend="numpy_nullable").astype(t)
        elif t == "float64":
            out[c] = pd.to_numeric(df[c]).astype(t)
        else:
            out[c] = df[c].astype(t)
    if provenance:
        for c in ("process", "source_path", "source_sha256", "mapping_path", "ingest_partner"):
            out[c] = df[c].astype("string")
        out["ingested_at"] = utc(df["ingested_at"])
        out["source_row"] = pd.to_numeric(df["source_row"]).astype("int64")
    return out.sort_values(["batch_id", "step", "kind", "variable", "bar_id"], kind="stable",
                           ignore_index=True)


def from_ns(col: pd.Series) -> pd.Series:
    """Int64 nanoseconds (or their text) -> datetime64[ns, UTC], exactly (no float on the way)."""
    if col.dtype.kind in "iu" or str(col.dtype) == "Int64":
        ns = col.astype("Int64")
    else:
        ns = pd.to_numeric(col, dtype_backend="numpy_nullable").astype("Int64")
    # numpy's NaT is the smallest int64
    raw = ns.to_numpy(dtype="int64", na_value=np.iinfo(np.int64).min)
    return pd.Series(raw.view("datetime64[ns]"), index=col.index).dt.tz_localize("UTC")

