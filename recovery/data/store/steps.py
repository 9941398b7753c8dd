"""Step data with its provenance: process definitions, ingest writes and the readers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable

import pandas as pd

from recovery.data.store.engine import StoreError
from recovery.data.store.tables import (KEY, LINK_COLUMNS, NO_BAR, OBS_COLUMNS, TABLES, VARIABLE_COLUMNS,
                                        as_schema, filters, now, utc)
from simulators.definition import BUILTIN_PROCESSES, Process, parse_process

__all__ = ["IngestRecord", "StepData", "process_text"]


@dataclass(frozen=True)
class IngestRecord:
    """Provenance of one ingest, written to ``ingests`` in the ingest's transaction.

    Attributes
    ----------
    process, process_digest : str
        Process the data belongs to.
    source_path : str
        Absolute path of the ingested file.
    source_sha256 : str
        SHA-256 of the file's bytes.
    source_bytes : int
        File size in bytes.
    mapping_path, mapping_sha256 : str or None
        The partner's mapping file and its SHA-256 (None for schema files).
    partner : str or None
        Partner named by the mapping (None for schema files, whose rows name theirs).
    ingested_at : datetime
        UTC time the ingest started.
    """

    process: str
    process_digest: str
    source_path: str
    source_sha256: str
    source_bytes: int
    mapping_path: str | None
    mapping_sha256: str | None
    partner: str | None
    ingested_at: datetime


class StepData:
    """Mixin of :class:`~recovery.data.store.Store`: processes, step rows, links, provenance."""

    # ---- processes --------------------------------------------------------
    def register_process(self, process: Process, text: str | None = None) -> None:
        """Store a process definition (once per name and digest).

        Parameters
        ----------
        process : Process
        text : str, optional
            The TOML text; read from ``process.source`` when not given.
        """
        if self._rows("SELECT 1 FROM processes WHERE name = ? AND digest = ?",
                      (process.name, process.digest)):
            return
        text = process_text(process) if text is None else text
        self._exec("INSERT INTO processes (name, digest, version, source, definition, stored_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (process.name, process.digest, process.version, process.source, text, now()))

    def process(self, name: str, digest: str | None = None) -> Process:
        """A stored process definition; the most recently stored one unless ``digest`` is given."""
        rows = self._rows(
            "SELECT definition, source FROM processes WHERE name = ?"
            + (" AND digest = ?" if digest else "") + " ORDER BY stored_at DESC",
            (name, digest) if digest else (name,))
        if not rows:
            known = sorted({r[0] for r in self._rows("SELECT name FROM processes")})
            raise StoreError(f"store {self.name}: no process '{name}'; stored: {known}")
        return parse_process(rows[0][0], rows[0][1] or name)

    def process_names(self) -> list[str]:
        """Names of the stored processes."""
        return sorted({r[0] for r in self._rows("SELECT name FROM processes")})

    # ---- ingest writes (used by recovery.data.ingest) ----------------------
    def add_ingest(self, rec: IngestRecord) -> int:
        """Insert the provenance row of an ingest; returns its id."""
        iid = self.next_id()
        self._exec(
            "INSERT INTO ingests (id, process, process_digest, source_path, source_sha256, "
            "source_bytes, mapping_path, mapping_sha256, partner, ingested_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (iid, rec.process, rec.process_digest, rec.source_path, rec.source_sha256,
             rec.source_bytes, rec.mapping_path, rec.mapping_sha256, rec.partner, rec.ingested_at))
        return iid

    def finish_ingest(self, ingest_id: int, *, source_rows: int, accepted: int, rejected: int,
                      duplicates: int) -> None:
        """Record an ingest's counts."""
        self._exec("UPDATE ingests SET source_rows = ?, accepted = ?, rejected = ?, duplicates = ? "
                   "WHERE id = ?", (source_rows, accepted, rejected, duplicates, ingest_id))

    def add_quarantine(self, ingest_id: int, path: str, rows: int) -> None:
        self._exec("INSERT INTO quarantine (ingest_id, path, rows) VALUES (?, ?, ?)",
                   (ingest_id, path, rows))

    def add_variables(self, df: pd.DataFrame) -> None:
        """Rows of ``variables`` (see the module docstring)."""
        self._insert_frame("variables", df, VARIABLE_COLUMNS)

    def stored_values(self, keys: pd.DataFrame) -> pd.DataFrame:
        """Stored observations with the same key as ``keys`` rows.

        Parameters
        ----------
        keys : DataFrame
            Columns ``pos`` (int64, the caller's row id) and the key columns
            ``process, batch_id, bar_key, step, variable, kind``.

        Returns
        -------
        DataFrame
            ``pos, value, source_path, source_row, ingest_id`` for each key already stored.
        """
        if not len(keys):
            return pd.DataFrame(columns=["pos", "value", "source_path", "source_row", "ingest_id"])
        self._stage("_recovery_keys", keys[["pos"] + KEY])
        try:
            out = self._frame(
                "SELECT k.pos, o.value, i.source_path, o.source_row, o.ingest_id "
                "FROM _recovery_keys k JOIN observations o ON o.process = k.process "
                "AND o.batch_id = k.batch_id AND o.bar_key = k.bar_key AND o.step = k.step "
                "AND o.variable = k.variable AND o.kind = k.kind "
                "JOIN ingests i ON i.id = o.ingest_id")
        finally:
            self._unstage("_recovery_keys")
        return out.astype({"pos": "int64", "value": "float64", "source_path": "str",
                           "source_row": "int64", "ingest_id": "int64"})

    def parts_at_step(self, process: str, parts: pd.DataFrame) -> pd.DataFrame:
        """Which of ``parts`` (``pos, batch_id, bar_key, step``) have a record at their step."""
        if not len(parts):
            return pd.DataFrame(columns=["pos"])
        # the process travels as a column: a query of a staged frame takes no parameters
        staged = parts[["pos", "batch_id", "bar_key", "step"]].assign(process=str(process))
        self._stage("_recovery_parts", staged)
        try:
            out = self._frame(
                "SELECT p.pos FROM _recovery_parts p WHERE EXISTS (SELECT 1 FROM observations o "
                "WHERE o.process = p.process AND o.batch_id = p.batch_id AND o.bar_key = p.bar_key "
                "AND o.step = p.step)")
        finally:
            self._unstage("_recovery_parts")
        return out.astype({"pos": "int64"}) if len(out) else pd.DataFrame({"pos": pd.Series([], dtype="int64")})

    def add_observations(self, df: pd.DataFrame) -> None:
        """Bulk-insert observations (columns as in the module docstring; ``observed_ns`` is the
        UTC timestamp in nanoseconds since the epoch, <NA> when unknown)."""
        self._insert_frame("observations", df, OBS_COLUMNS)

    def add_links(self, df: pd.DataFrame) -> None:
        """Insert genealogy links not stored yet."""
        if not len(df):
            return
        df = df.drop_duplicates(LINK_COLUMNS[:7])
        self._stage("_recovery_links", df[LINK_COLUMNS])
        try:
            cols = ", ".join(LINK_COLUMNS)
            self._exec(
                f"INSERT INTO links ({cols}) SELECT {cols} FROM _recovery_links n WHERE NOT EXISTS "
                "(SELECT 1 FROM links l WHERE l.process = n.process AND l.parent_batch = n.parent_batch "
                "AND l.parent_bar = n.parent_bar AND l.parent_step = n.parent_step "
                "AND l.child_batch = n.child_batch AND l.child_bar = n.child_bar "
                "AND l.child_step = n.child_step)")
        finally:
            self._unstage("_recovery_links")

    # ---- readers ----------------------------------------------------------
    def read_steps(self, *, partner: str | None = None, process: str | None = None,
                   batch_ids: Iterable[str] | None = None, provenance: bool = False) -> pd.DataFrame:
        """Stored step data as the simulator's long table.

        Parameters
        ----------
        partner : str, optional
            Only this partner's rows.
        process : str, optional
            Only this process's rows (a store may hold several processes).
        batch_ids : iterable of str, optional
            Only these batches.
        provenance : bool
            Add ``process, source_path, source_sha256, mapping_path, ingest_partner,
            ingested_at, source_row`` after the schema columns.

        Returns
        -------
        DataFrame
            Schema columns in schema order and dtypes (``simulators.schema.COLUMNS``),
            sorted like the simulator's output (batch, step, kind, variable, bar).

        Examples
        --------
        >>> from recovery.data.store import open_store
        >>> from simulators.schema import COLUMNS
        >>> with open_store("duckdb://:memory:") as st:
        ...     list(st.read_steps().columns) == list(COLUMNS)
        True
        """
        where, params = filters(partner=partner, process=process, batch_ids=batch_ids,
                                      alias="o")
        extra = (", o.process, i.source_path, i.source_sha256, i.mapping_path, "
                 "i.partner AS ingest_partner, i.ingested_at, o.source_row") if provenance else ""
        df = self._frame(
            "SELECT o.batch_id, o.bar_id, o.step, o.factory, o.partner, o.variable, o.value, "
            f"o.unit, o.kind, o.observed_ns AS timestamp{extra} FROM observations o "
            f"JOIN ingests i ON i.id = o.ingest_id{where}", params)
        return as_schema(df, provenance=provenance)

    def read_links(self, *, process: str | None = None, partner: str | None = None) -> pd.DataFrame:
        """Genealogy links (``parent_bar``/``child_bar`` are <NA> for batch-level parts)."""
        where, params = filters(partner=partner, process=process, alias="l")
        df = self._frame(f"SELECT {', '.join('l.' + c for c in LINK_COLUMNS)} FROM links l{where}",
                         params)
        if not len(df):
            df = pd.DataFrame({c: [] for c in LINK_COLUMNS})
        out = df.astype({"process": "string", "parent_batch": "string", "child_batch": "string",
                         "parent_step": "int64", "child_step": "int64", "partner": "string",
                         "ingest_id": "int64", "parent_bar": "Int64", "child_bar": "Int64"})
        for c in ("parent_bar", "child_bar"):
            out[c] = out[c].mask(out[c] == NO_BAR)
        return out

    def read_variables(self, *, process: str | None = None) -> pd.DataFrame:
        """What mapped columns became, per ingest (see the module docstring)."""
        where, params = filters(process=process, alias="v")
        df = self._frame(f"SELECT {', '.join('v.' + c for c in VARIABLE_COLUMNS)} "
                         f"FROM variables v{where}", params)
        if not len(df):
            return pd.DataFrame({c: [] for c in VARIABLE_COLUMNS})
        df["specified"] = df["specified"].astype(str).str.lower().isin(["true", "t", "1"])
        return df.astype({"ingest_id": "int64", "step": "int64"})

    def data_versions(self, process: str, batch_ids: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
        """Batch -> ``(rows, last ingest id)`` of its stored step data.

        Observations are only ever added, so a batch whose pair is unchanged has
        exactly the rows it had: the service keys its caches by this pair and
        reads a batch's rows only when it changed. One aggregate query, much
        cheaper than reading the rows.
        """
        where, params = filters(process=process, batch_ids=batch_ids, alias="o")
        rows = self._rows(f"SELECT o.batch_id, COUNT(*), MAX(o.ingest_id) FROM observations o{where} "
                          "GROUP BY o.batch_id", params)
        return {str(b): (int(n), int(i)) for b, n, i in rows}

    def ingest_batches(self, ingest_id: int) -> list[tuple[str, str]]:
        """The (batch, partner) pairs an ingest stored rows of, sorted (its audit entry lists them)."""
        rows = self._rows("SELECT DISTINCT batch_id, partner FROM observations WHERE ingest_id = ?",
                          (int(ingest_id),))
        return sorted((str(b), str(p)) for b, p in rows)

    def ingests(self, *, partner: str | None = None) -> pd.DataFrame:
        """One row per ingest with its provenance and counts (oldest first).

        The only reader of the ``ingests`` table: what an ingest read, accepted,
        rejected and skipped (the tests show a crashed ingest left no row here).
        """
        where, params = filters(partner=partner, alias="i")
        df = self._frame("SELECT i.*, q.path AS quarantine_path FROM ingests i "
                         f"LEFT JOIN quarantine q ON q.ingest_id = i.id{where} ORDER BY i.id", params)
        if len(df):
            df["ingested_at"] = utc(df["ingested_at"])
        return df

    def counts(self) -> dict[str, int]:
        """Rows per table (tests use it to show a failed ingest changed nothing)."""
        return {t: int(self._rows(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}



def process_text(process: Process) -> str:
    """The TOML text a process was loaded from (built-in or file), checked against its digest."""
    import hashlib
    from importlib import resources

    if process.source in BUILTIN_PROCESSES.values():
        text = resources.files("simulators.processes").joinpath(process.source).read_text("utf-8")
    else:
        text = Path(process.source).read_text("utf-8")
    if hashlib.sha256(text.encode()).hexdigest()[:16] != process.digest:
        raise StoreError(f"{process.source}: the file changed since the process was loaded")
    return text

