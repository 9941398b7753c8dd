"""The store: step data with provenance, process definitions, models, recommendations, decisions.

One :class:`Store` class runs the same SQL on two engines:

=================================  ===============================================
URL                                engine
=================================  ===============================================
``duckdb:///abs/path/file.duckdb``  DuckDB file (embedded, the default)
``duckdb://relative/file.duckdb``   DuckDB file relative to the working directory
``duckdb://:memory:``               DuckDB in memory (tests)
``postgresql://user:pw@host/db``    PostgreSQL through psycopg 3
=================================  ===============================================

Without a URL, :func:`open_store` uses the environment variable
``RECOVERY_STORE``, else a DuckDB file under the user's data directory
(``platformdirs.user_data_dir("recovery")/recovery.duckdb``).

Tables (all append-only except ``processes``, which only gains rows):

``processes``        process definitions (TOML text), by name and digest
``ingests``          one row per successful ingest: source file, its sha256, mapping
                     and its sha256, partner, time, counts, quarantine file
``observations``     the step-data schema columns + ``process``, ``ingest_id`` and
                     ``source_row`` (provenance); unique per
                     (process, batch_id, bar_id, step, variable, kind)
``links``            genealogy: parent part at one step -> child part at another
``variables``        per ingest, what each mapped column became (source column and unit,
                     process unit, and whether the source gives specification limits)
``quarantine``       per ingest, the quarantine file and its rejected-row count
``model_versions``   fitted models (parameters as JSON, an artifact path)
``recommendations``  plans proposed for a batch
``decisions``        what the engineer did with a recommendation

Sharing a DuckDB file between processes: DuckDB lets one process at a time open
the file. Every opener waits for the lock (``lock_timeout``, default 30 s) and,
while it waits, leaves a ``<file>.waiting.<pid>.*`` marker next to the store. A
store opened with ``shared=True`` (the service) holds the file only while it
works: it closes the connection when it has been idle for a moment or as soon
as it sees another process's marker, and reopens it on the next use. So
``recovery tokens`` and ``recovery ingest`` run while ``recovery serve`` does;
the service's requests wait (then answer 503) while such a command holds the
file. PostgreSQL needs none of this.

Service tables: ``tokens``, ``audit`` (append-only), ``handovers`` (a batch handed
to a partner), ``decision_heads`` (the final decision per batch and step, the
one row that changes: it points at the superseding decision) and
``idempotency`` (the first answer to a request with an ``Idempotency-Key``).

Dialect differences are kept to three small shims: parameter markers, bulk
insert (DuckDB reads a registered DataFrame; PostgreSQL gets ``COPY``) and
how a result set becomes a DataFrame.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from simulators.definition import BUILTIN_PROCESSES, Process, parse_process
from simulators.schema import COLUMNS

__all__ = ["Store", "StoreError", "open_store", "default_url", "ENV_VAR", "IngestRecord", "shown_path"]

ENV_VAR = "RECOVERY_STORE"

#: How long an opener waits for another process to release a DuckDB file (s).
LOCK_TIMEOUT = 30.0
#: A shared store closes its DuckDB connection after this long without use (s).
SHARED_IDLE = 0.5

#: A bar-less (batch-level) row gets this bar key, so the uniqueness key has no NULL in it
#: (NULL never equals NULL in SQL, and PostgreSQL cannot use an index on IS NOT DISTINCT FROM).
NO_BAR = -1

_OBS_COLUMNS = ["process", "batch_id", "bar_id", "bar_key", "step", "factory", "partner",
                "variable", "value", "unit", "kind", "observed_ns", "ingest_id", "source_row"]
_LINK_COLUMNS = ["process", "parent_batch", "parent_bar", "parent_step", "child_batch",
                 "child_bar", "child_step", "partner", "ingest_id"]
_VARIABLE_COLUMNS = ["ingest_id", "process", "step", "variable", "kind", "source_column",
                     "source_unit", "unit", "specified"]
_KEY = ["process", "batch_id", "bar_key", "step", "variable", "kind"]


class StoreError(RuntimeError):
    """The store cannot be opened or a write failed; the message names the store."""


def default_url() -> str:
    """The store URL used when none is given: ``$RECOVERY_STORE`` or the user's DuckDB file."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    from platformdirs import user_data_dir

    return f"duckdb://{Path(user_data_dir('recovery')) / 'recovery.duckdb'}"


def open_store(url: str | None = None, *, shared: bool = False,
               lock_timeout: float = LOCK_TIMEOUT) -> "Store":
    """Open (and create if needed) the store at ``url``.

    Parameters
    ----------
    url : str, optional
        ``duckdb:///path/file.duckdb``, ``duckdb://:memory:`` or
        ``postgresql://user:pass@host:port/db``. Default: :func:`default_url`.
    shared : bool
        DuckDB file only: hold the file's lock only while working, and give it
        up when another process waits for it (see the module docstring). For
        long-running processes (the service).
    lock_timeout : float
        Seconds to wait for another process to release a DuckDB file before
        :class:`StoreError`.

    Returns
    -------
    Store
        Open, with every table created. Use it as a context manager or call
        :meth:`Store.close`.

    Examples
    --------
    >>> with open_store("duckdb://:memory:") as st:
    ...     st.counts()["observations"]
    0
    """
    return Store(url or default_url(), shared=shared, lock_timeout=lock_timeout)


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


def _ddl(dialect: str) -> list[str]:
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
        "CREATE INDEX IF NOT EXISTS links_child ON links (process, child_batch, child_bar)",
    ]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(s: pd.Series) -> pd.Series:
    """Any timestamp column from either engine -> datetime64[ns, UTC]."""
    return pd.to_datetime(s, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")


class Store:
    """Step data and everything derived from it, in DuckDB or PostgreSQL.

    Parameters
    ----------
    url : str
        See :func:`open_store`.

    Notes
    -----
    Writes of one ingest happen in one transaction (:meth:`transaction`); a
    failure rolls everything back. Every reader takes ``partner=`` to limit the
    rows to one partner's (the service uses it for access control).
    """

    def __init__(self, url: str, *, shared: bool = False, lock_timeout: float = LOCK_TIMEOUT):
        self.url = url
        self.lock_timeout = float(lock_timeout)
        self._con = None
        self._mutex = threading.RLock()     # one connection, one user at a time
        self._depth = 0                     # nesting of session()
        self._last_used = 0.0
        self._closed = False
        self._in_tx = False
        self._path = None                   # the DuckDB file, when there is one
        self._staged: dict[str, Any] = {}    # sessions held by _stage
        if url.startswith("duckdb://"):
            self.dialect = "duckdb"
            path = url[len("duckdb://"):]
            if path != ":memory:":
                p = Path(path).expanduser().absolute()
                self._path = str(p)
                self.location = str(p)
                self.name = shown_path(p)
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"store {self.name}: cannot create its folder: "
                                     f"{exc.strerror}") from None
            else:
                self.location = self.name = ":memory:"
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.location = self.name = _redact(url)
        else:
            raise StoreError(f"store URL '{_redact(url)}': expected duckdb:///path/file.duckdb or "
                             f"postgresql://user:pass@host/db")
        self.shared = bool(shared) and self._path is not None
        with self.transaction():
            for stmt in _ddl(self.dialect):
                self._exec(stmt)
        if self.shared:
            self._stop = threading.Event()
            threading.Thread(target=self._release_when_idle, daemon=True,
                             name=f"store-release-{self.name}").start()

    # ---- engines ----------------------------------------------------------
    def _connect(self) -> None:
        if self.dialect == "postgresql":
            import psycopg

            try:
                self._con = psycopg.connect(self.url, autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"store {self.name}: cannot connect: {exc}") from None
            self._con.execute("SET TIME ZONE 'UTC'")
            return
        self._con = _connect_duckdb(self._path or ":memory:", self.name, self.lock_timeout,
                                    give_way=self.shared)
        # Spill to disk instead of growing: ingest must stay near 1 GiB for 1e6 rows.
        self._con.execute("SET memory_limit = '512MB'")
        self._con.execute("SET preserve_insertion_order = false")

    def _disconnect(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con.close()

    @contextmanager
    def session(self) -> Iterator["Store"]:
        """Hold the connection (and, for a shared DuckDB file, its lock) for a block of work.

        Nesting joins the outer session. Every method opens one for itself, so
        callers need this only to make several calls one unit (the service does
        it per request step), or to keep DuckDB's registered frames alive
        across calls.
        """
        with self._mutex:
            if self._con is None:
                if self._closed:
                    raise StoreError(f"store {self.name} is closed")
                self._connect()
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                self._last_used = time.monotonic()
                if self._depth == 0 and self.shared and _others_waiting(self._path):
                    self._disconnect()

    def _release_when_idle(self) -> None:
        """Shared DuckDB file: close the connection when idle or when another process waits."""
        while not self._stop.wait(0.02):
            if not self._mutex.acquire(blocking=False):
                continue
            try:
                if self._con is not None and self._depth == 0 and (
                        time.monotonic() - self._last_used > SHARED_IDLE or _others_waiting(self._path)):
                    self._disconnect()
            finally:
                self._mutex.release()

    def close(self) -> None:
        """Close the connection."""
        with self._mutex:
            self._closed = True
            if self.shared:
                self._stop.set()
            self._disconnect()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r}, {self.dialect})"

    # ---- dialect shims ----------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.session():
            self._con.execute(self._sql(sql), tuple(params))

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Small result sets of plain values (no timestamps: DuckDB needs pytz for those)."""
        with self.session():
            return self._con.execute(self._sql(sql), tuple(params)).fetchall()

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        with self.session():
            return self._frame_in_session(sql, params)

    def _frame_in_session(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        if self.dialect == "duckdb":
            import warnings

            with warnings.catch_warnings():
                # duckdb's own DataFrame conversion trips a pandas 3.1 deprecation, not ours
                warnings.filterwarnings("ignore", message=".*inplace keyword.*")
                return self._con.execute(sql, tuple(params)).df()
        from psycopg import sql as psql

        # COPY is several times faster than fetching Python tuples for big reads.
        query = psql.SQL(sql.replace("?", "{}")).format(*map(psql.Literal, params))
        buf = io.BytesIO()
        with self._con.cursor() as cur:
            with cur.copy(psql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)")
                          .format(query)) as cp:
                for block in cp:
                    buf.write(block)
        buf.seek(0)
        if buf.getbuffer().nbytes == 0:
            return pd.DataFrame()
        return pd.read_csv(buf, keep_default_na=False, na_values=[""], dtype=str)

    def _insert_frame(self, table: str, df: pd.DataFrame, columns: list[str]) -> None:
        if not len(df):
            return
        with self.session():
            self._insert_frame_in_session(table, df, columns)

    def _insert_frame_in_session(self, table: str, df: pd.DataFrame, columns: list[str]) -> None:
        df = df[columns]
        if self.dialect == "duckdb":
            self._con.register("_recovery_insert", df)
            try:
                cols = ", ".join(columns)
                self._con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _recovery_insert")
            finally:
                self._con.unregister("_recovery_insert")
            return
        buf = io.StringIO()
        out = df.copy()
        for c in out.columns:
            if isinstance(out[c].dtype, pd.DatetimeTZDtype):
                out[c] = out[c].dt.strftime("%Y-%m-%d %H:%M:%S.%f+00")
            elif out[c].dtype.kind == "f":
                # repr keeps every bit of a float; to_csv's default may not
                out[c] = out[c].map(lambda v: "" if v != v else repr(float(v)))
        out.to_csv(buf, index=False, header=False, na_rep="")
        with self._con.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)") as cp:
                cp.write(buf.getvalue())

    def _stage(self, name: str, df: pd.DataFrame) -> None:
        """Make ``df`` queryable as table ``name`` until :meth:`_unstage`.

        A session is held in between: a registered frame lives on one connection.
        """
        hold = self.session()
        hold.__enter__()
        self._staged[name] = hold
        if self.dialect == "duckdb":
            self._con.register(name, df)
            return
        types = {"i": "BIGINT", "f": "DOUBLE PRECISION", "b": "BOOLEAN"}
        cols = ", ".join(f"{c} {types.get(df[c].dtype.kind, 'TEXT')}" for c in df.columns)
        self._exec(f"CREATE TEMP TABLE {name} ({cols})")
        self._insert_frame(name, df, list(df.columns))

    def _unstage(self, name: str) -> None:
        try:
            if self.dialect == "duckdb":
                self._con.unregister(name)
            else:
                self._exec(f"DROP TABLE IF EXISTS {name}")
        finally:
            self._staged.pop(name).__exit__(None, None, None)

    @contextmanager
    def transaction(self) -> Iterator["Store"]:
        """All writes inside commit together or not at all (nesting joins the outer one)."""
        with self.session():
            if self._in_tx:
                yield self
                return
            self._in_tx = True
            try:
                if self.dialect == "duckdb":
                    self._con.execute("BEGIN TRANSACTION")
                    try:
                        yield self
                    except BaseException:
                        self._con.execute("ROLLBACK")
                        raise
                    self._con.execute("COMMIT")
                else:
                    with self._con.transaction():
                        yield self
            finally:
                self._in_tx = False

    def next_id(self) -> int:
        """A fresh id from the store's sequence (ids are unique across tables)."""
        return int(self._rows("SELECT nextval('recovery_ids')")[0][0])

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
                   (process.name, process.digest, process.version, process.source, text, _now()))

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
        self._insert_frame("variables", df, _VARIABLE_COLUMNS)

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
        self._stage("_recovery_keys", keys[["pos"] + _KEY])
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
        self._stage("_recovery_parts", parts[["pos", "batch_id", "bar_key", "step"]])
        try:
            out = self._frame(
                "SELECT p.pos FROM _recovery_parts p WHERE EXISTS (SELECT 1 FROM observations o "
                "WHERE o.process = ? AND o.batch_id = p.batch_id AND o.bar_key = p.bar_key "
                "AND o.step = p.step)", (process,))
        finally:
            self._unstage("_recovery_parts")
        return out.astype({"pos": "int64"}) if len(out) else pd.DataFrame({"pos": pd.Series([], dtype="int64")})

    def add_observations(self, df: pd.DataFrame) -> None:
        """Bulk-insert observations (columns as in the module docstring; ``observed_ns`` is the
        UTC timestamp in nanoseconds since the epoch, <NA> when unknown)."""
        self._insert_frame("observations", df, _OBS_COLUMNS)

    def add_links(self, df: pd.DataFrame) -> None:
        """Insert genealogy links not stored yet."""
        if not len(df):
            return
        df = df.drop_duplicates(_LINK_COLUMNS[:7])
        self._stage("_recovery_links", df[_LINK_COLUMNS])
        try:
            cols = ", ".join(_LINK_COLUMNS)
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
        >>> with open_store("duckdb://:memory:") as st:
        ...     list(st.read_steps().columns) == list(COLUMNS)
        True
        """
        where, params = self._filters(partner=partner, process=process, batch_ids=batch_ids,
                                      alias="o")
        extra = (", o.process, i.source_path, i.source_sha256, i.mapping_path, "
                 "i.partner AS ingest_partner, i.ingested_at, o.source_row") if provenance else ""
        df = self._frame(
            "SELECT o.batch_id, o.bar_id, o.step, o.factory, o.partner, o.variable, o.value, "
            f"o.unit, o.kind, o.observed_ns AS timestamp{extra} FROM observations o "
            f"JOIN ingests i ON i.id = o.ingest_id{where}", params)
        return _as_schema(df, provenance=provenance)

    def read_links(self, *, process: str | None = None, partner: str | None = None) -> pd.DataFrame:
        """Genealogy links (``parent_bar``/``child_bar`` are <NA> for batch-level parts)."""
        where, params = self._filters(partner=partner, process=process, alias="l")
        df = self._frame(f"SELECT {', '.join('l.' + c for c in _LINK_COLUMNS)} FROM links l{where}",
                         params)
        if not len(df):
            df = pd.DataFrame({c: [] for c in _LINK_COLUMNS})
        out = df.astype({"process": "string", "parent_batch": "string", "child_batch": "string",
                         "parent_step": "int64", "child_step": "int64", "partner": "string",
                         "ingest_id": "int64", "parent_bar": "Int64", "child_bar": "Int64"})
        for c in ("parent_bar", "child_bar"):
            out[c] = out[c].mask(out[c] == NO_BAR)
        return out

    def read_variables(self, *, process: str | None = None) -> pd.DataFrame:
        """What mapped columns became, per ingest (see the module docstring)."""
        where, params = self._filters(process=process, alias="v")
        df = self._frame(f"SELECT {', '.join('v.' + c for c in _VARIABLE_COLUMNS)} "
                         f"FROM variables v{where}", params)
        if not len(df):
            return pd.DataFrame({c: [] for c in _VARIABLE_COLUMNS})
        df["specified"] = df["specified"].astype(str).str.lower().isin(["true", "t", "1"])
        return df.astype({"ingest_id": "int64", "step": "int64"})

    def ingests(self, *, partner: str | None = None) -> pd.DataFrame:
        """One row per ingest with its provenance and counts (oldest first)."""
        where, params = self._filters(partner=partner, alias="i")
        df = self._frame("SELECT i.*, q.path AS quarantine_path FROM ingests i "
                         f"LEFT JOIN quarantine q ON q.ingest_id = i.id{where} ORDER BY i.id", params)
        if len(df):
            df["ingested_at"] = _utc(df["ingested_at"])
        return df

    def counts(self) -> dict[str, int]:
        """Rows per table (tests use it to show a failed ingest changed nothing)."""
        tables = ["processes", "ingests", "observations", "links", "variables", "quarantine",
                  "model_versions", "recommendations", "decisions", "tokens", "audit", "handovers",
                  "decision_heads", "idempotency"]
        return {t: int(self._rows(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in tables}

    def _filters(self, *, partner=None, process=None, batch_ids=None, alias="o"):
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

    # ---- models, recommendations, decisions (append-only) ------------------
    def add_model_version(self, *, process: str, name: str, parameters: dict | None = None,
                          artifact: str | None = None, partner: str | None = None) -> int:
        """Record a fitted model version; returns its id.

        Parameters
        ----------
        process : str
            Process the model was fitted for.
        name : str
            Model name (e.g. ``causal``).
        parameters : dict, optional
            JSON-serialisable summary (hyper-parameters, data ingests used, metrics).
        artifact : str, optional
            Where the fitted model is kept (path or URL).
        partner : str, optional
            Owner, when the model is one partner's.
        """
        mid = self.next_id()
        self._exec("INSERT INTO model_versions (id, process, name, partner, parameters, artifact, "
                   "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (mid, process, name, partner, json.dumps(parameters or {}), artifact, _now()))
        return mid

    def model_versions(self, *, process: str | None = None, partner: str | None = None) -> pd.DataFrame:
        """Model versions, oldest first; ``parameters`` parsed from JSON."""
        return self._list("model_versions", "created_at", ["parameters"], process=process,
                          partner=partner)

    def add_recommendation(self, *, process: str, batch_id: str, after_step: int, agent: str,
                           plan: dict, expected: dict | None = None, model_version: int | None = None,
                           partner: str | None = None) -> int:
        """Record a plan proposed for a batch after ``after_step``; returns its id.

        ``plan`` maps lever names to values in the levers' units; ``expected`` holds
        what the agent predicted (e.g. probability of acceptance).
        """
        rid = self.next_id()
        self._exec("INSERT INTO recommendations (id, process, batch_id, after_step, model_version, "
                   "agent, plan, expected, partner, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (rid, process, str(batch_id), int(after_step), model_version, agent,
                    json.dumps(plan), json.dumps(expected or {}), partner, _now()))
        return rid

    def recommendations(self, *, process: str | None = None, partner: str | None = None) -> pd.DataFrame:
        """Recommendations, oldest first; ``plan`` and ``expected`` parsed from JSON."""
        return self._list("recommendations", "created_at", ["plan", "expected"], process=process,
                          partner=partner)

    def add_decision(self, *, batch_id: str, engineer: str, decision: str,
                     recommendation_id: int | None = None, plan: dict | None = None,
                     comment: str = "", partner: str | None = None, decision_id: int | None = None) -> int:
        """Record what an engineer decided (``accepted``, ``modified``, ``rejected``...); returns its id
        (``decision_id`` when given: one the caller drew from :meth:`next_id`)."""
        did = self.next_id() if decision_id is None else int(decision_id)
        self._exec("INSERT INTO decisions (id, recommendation_id, batch_id, engineer, decision, plan, "
                   "comment, partner, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (did, recommendation_id, str(batch_id), engineer, decision,
                    json.dumps(plan) if plan is not None else None, comment, partner, _now()))
        return did

    def decisions(self, *, partner: str | None = None) -> pd.DataFrame:
        """Decisions, oldest first; ``plan`` parsed from JSON."""
        return self._list("decisions", "decided_at", ["plan"], partner=partner)

    def claim_decision(self, *, process: str, batch_id: str, after_step: int, decision_id: int,
                       supersedes: int | None = None) -> int | None:
        """Make ``decision_id`` the final decision of the batch after ``after_step``.

        Without ``supersedes`` this succeeds only when the batch has no final
        decision at that step yet; with it, only when ``supersedes`` is the
        current one (compare-and-swap, so of two concurrent supersessions of the
        same decision one wins). Call it in the transaction that stores the decision.

        Returns
        -------
        int or None
            None when the claim succeeded; otherwise the id of the current final
            decision (-1 when there is none, so nothing to supersede).
        """
        key = (process, str(batch_id), int(after_step))
        if supersedes is None:
            got = self._rows("INSERT INTO decision_heads (process, batch_id, after_step, decision_id) "
                             "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING decision_id",
                             (*key, int(decision_id)))
        else:
            got = self._rows("UPDATE decision_heads SET decision_id = ? WHERE process = ? AND batch_id = ? "
                             "AND after_step = ? AND decision_id = ? RETURNING decision_id",
                             (int(decision_id), *key, int(supersedes)))
        if got:
            return None
        cur = self._rows("SELECT decision_id FROM decision_heads WHERE process = ? AND batch_id = ? "
                         "AND after_step = ?", key)
        return int(cur[0][0]) if cur else -1

    def final_decisions(self, process: str, batch_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """``batch_id, after_step, decision_id`` of every final decision (see :meth:`claim_decision`)."""
        where, params = self._filters(process=process, batch_ids=batch_ids, alias="h")
        df = self._frame(f"SELECT h.batch_id, h.after_step, h.decision_id FROM decision_heads h{where} "
                         "ORDER BY h.batch_id, h.after_step", params)
        if not len(df):
            return pd.DataFrame({"batch_id": pd.Series([], dtype=str), "after_step": pd.Series([], dtype="int64"),
                                 "decision_id": pd.Series([], dtype="int64")})
        return df.astype({"batch_id": str, "after_step": "int64", "decision_id": "int64"})

    # ---- idempotency keys --------------------------------------------------
    def claim_idempotency_key(self, *, token_id: int, key: str,
                              request_sha256: str) -> tuple[str, int | None, dict | None] | None:
        """Claim ``key`` for this token's request; call it inside the request's transaction.

        Returns
        -------
        tuple or None
            None when the key is new (now claimed: store the answer with
            :meth:`finish_idempotency_key` in the same transaction); otherwise
            ``(request_sha256, status, response)`` of the request that claimed it
            first. On PostgreSQL a concurrent claim of the same key waits here
            until the first transaction ends.
        """
        got = self._rows("INSERT INTO idempotency (token_id, key, request_sha256, created_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING key",
                         (int(token_id), key, request_sha256, _now()))
        if got:
            return None
        return self.idempotency_answer(token_id=token_id, key=key)

    def idempotency_answer(self, *, token_id: int,
                           key: str) -> tuple[str, int | None, dict | None] | None:
        """``(request_sha256, status, response)`` stored for a token's key, or None."""
        rows = self._rows("SELECT request_sha256, status, response FROM idempotency "
                          "WHERE token_id = ? AND key = ?", (int(token_id), key))
        if not rows:
            return None
        sha, status, response = rows[0]
        return sha, (int(status) if status is not None else None), \
            (json.loads(response) if response is not None else None)

    def finish_idempotency_key(self, *, token_id: int, key: str, status: int, response: dict) -> None:
        """Keep the answer to a claimed key (replays return it)."""
        self._exec("UPDATE idempotency SET status = ?, response = ? WHERE token_id = ? AND key = ?",
                   (int(status), json.dumps(response, default=str), int(token_id), key))

    # ---- hand-overs and partners -------------------------------------------
    def add_handover(self, *, process: str, batch_id: str, partner: str, actor: str) -> int:
        """Record that ``batch_id`` was handed to ``partner`` (it may then read and append); returns the id."""
        hid = self.next_id()
        self._exec("INSERT INTO handovers (id, process, batch_id, partner, actor, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (hid, process, str(batch_id), partner, actor, _now()))
        return hid

    def handovers(self, process: str, batch_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """``batch_id, partner`` of every hand-over (a pair may repeat)."""
        where, params = self._filters(process=process, batch_ids=batch_ids, alias="h")
        df = self._frame(f"SELECT h.batch_id, h.partner FROM handovers h{where} ORDER BY h.id", params)
        if not len(df):
            return pd.DataFrame({"batch_id": pd.Series([], dtype=str), "partner": pd.Series([], dtype=str)})
        return df.astype(str)

    def batch_owners(self, process: str, batch_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """``batch_id, partner``: partners with step data in a batch, and those it was handed to
        (one query: the service asks it on every request)."""
        w1, p1 = self._filters(process=process, batch_ids=batch_ids, alias="o")
        w2, p2 = self._filters(process=process, batch_ids=batch_ids, alias="h")
        df = self._frame(f"SELECT DISTINCT o.batch_id, o.partner FROM observations o{w1} UNION "
                         f"SELECT h.batch_id, h.partner FROM handovers h{w2}", [*p1, *p2])
        if not len(df):
            return pd.DataFrame({"batch_id": pd.Series([], dtype=str), "partner": pd.Series([], dtype=str)})
        return df.astype(str)

    def known_partners(self) -> dict[str, str]:
        """Partners the store knows, each with where from (a stored process, or ingested data).

        Mapping files name their partner; ingesting one records it, so mapped
        partners are known once their first file is in.
        """
        out: dict[str, str] = {}
        for text, source in self._rows("SELECT definition, source FROM processes"):
            proc = parse_process(text, source or "stored process")
            for pt in proc.partners:
                out.setdefault(pt.id, f"process '{proc.name}'")
        for (pt,) in self._rows("SELECT DISTINCT partner FROM observations UNION "
                                "SELECT DISTINCT partner FROM ingests WHERE partner IS NOT NULL"):
            out.setdefault(str(pt), "ingested data")
        return out

    # ---- API tokens (hashes only) ------------------------------------------
    def add_token(self, *, token_hash: str, partner: str, role: str, name: str | None = None) -> int:
        """Store a token's hash with its partner and role; returns the token id."""
        tid = self.next_id()
        self._exec("INSERT INTO tokens (id, token_hash, partner, role, name, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (tid, token_hash, partner, role, name, _now()))
        return tid

    def token(self, token_hash: str) -> tuple[int, str, str, str | None] | None:
        """(id, partner, role, name) of a live (not revoked) token, or None."""
        rows = self._rows("SELECT id, partner, role, name FROM tokens WHERE token_hash = ? "
                          "AND revoked_at IS NULL", (token_hash,))
        return tuple(rows[0]) if rows else None

    def revoke_token(self, token_id: int) -> bool:
        """Revoke a token; False when no live token has that id."""
        live = self._rows("SELECT COUNT(*) FROM tokens WHERE id = ? AND revoked_at IS NULL", (int(token_id),))
        if not live[0][0]:
            return False
        self._exec("UPDATE tokens SET revoked_at = ? WHERE id = ?", (_now(), int(token_id)))
        return True

    def tokens(self) -> pd.DataFrame:
        """Every token (live and revoked), without the hashes."""
        return self._frame("SELECT id, partner, role, name, created_at, revoked_at FROM tokens ORDER BY id")

    # ---- audit trail (append-only: no update, no delete) ------------------
    def add_audit(self, *, actor: str, action: str, partner: str | None = None, role: str | None = None,
                  batch_id: str | None = None, model_version: str | None = None,
                  input_hash: str | None = None, payload: dict | None = None) -> int:
        """Append one entry to the audit trail; returns its id."""
        aid = self.next_id()
        self._exec("INSERT INTO audit (id, recorded_at, actor, partner, role, action, batch_id, model_version, "
                   "input_hash, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (aid, _now(), actor, partner, role, action, batch_id, model_version, input_hash,
                    json.dumps(payload or {}, default=str)))
        return aid

    def audit(self, *, partner: str | None = None, batch_ids: Iterable[str] | None = None,
              or_batch_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """The audit trail, oldest first; ``payload`` parsed from JSON.

        Parameters
        ----------
        partner : str, optional
            Only entries made by this partner's tokens...
        batch_ids : iterable of str, optional
            Only entries about these batches.
        or_batch_ids : iterable of str, optional
            ...or about these batches, whoever made them (what a partner sees:
            its own entries and every entry about the batches it owns).
        """
        if or_batch_ids is None or partner is None:
            return self._list("audit", "recorded_at", ["payload"], partner=partner, batch_ids=batch_ids)
        ids = [str(b) for b in or_batch_ids]
        cond = "t.partner = ?" + (f" OR t.batch_id IN ({', '.join('?' * len(ids))})" if ids else "")
        extra, params = self._filters(batch_ids=batch_ids, alias="t")
        extra = extra.replace(" WHERE ", " AND ", 1)
        df = self._frame(f"SELECT * FROM audit t WHERE ({cond}){extra} ORDER BY t.id",
                         [partner, *ids, *params])
        return self._parsed(df, "recorded_at", ["payload"])

    def batch_partners(self, process: str, batch_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """(batch_id, partner, last_step) for every partner with step data of a batch."""
        where, params = self._filters(process=process, batch_ids=batch_ids, alias="o")
        return self._frame(f"SELECT o.batch_id, o.partner, MAX(o.step) AS last_step FROM observations o"
                           f"{where} GROUP BY o.batch_id, o.partner ORDER BY o.batch_id, o.partner", params)

    def _list(self, table, time_col, json_cols, **filters) -> pd.DataFrame:
        where, params = self._filters(alias="t", **filters)
        df = self._frame(f"SELECT * FROM {table} t{where} ORDER BY t.id", params)
        return self._parsed(df, time_col, json_cols)

    @staticmethod
    def _parsed(df: pd.DataFrame, time_col: str, json_cols: list[str]) -> pd.DataFrame:
        if len(df):
            df[time_col] = _utc(df[time_col])
            for c in json_cols:
                df[c] = df[c].map(lambda s: json.loads(s) if isinstance(s, str) else None)
        return df


def _as_schema(df: pd.DataFrame, *, provenance: bool) -> pd.DataFrame:
    """Engine result -> the schema's dtypes, column order and the simulator's row order."""
    if not len(df):
        out = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in COLUMNS.items()})
        return out
    out = pd.DataFrame(index=df.index)
    for c, t in COLUMNS.items():
        if c == "timestamp":
            # nanoseconds since the epoch (UTC): SQL timestamps stop at microseconds
            out[c] = _from_ns(df[c])
        elif t in ("Int64", "int64"):
            out[c] = pd.to_numeric(df[c], dtype_backend="numpy_nullable").astype(t)
        elif t == "float64":
            out[c] = pd.to_numeric(df[c]).astype(t)
        else:
            out[c] = df[c].astype(t)
    if provenance:
        for c in ("process", "source_path", "source_sha256", "mapping_path", "ingest_partner"):
            out[c] = df[c].astype("string")
        out["ingested_at"] = _utc(df["ingested_at"])
        out["source_row"] = pd.to_numeric(df["source_row"]).astype("int64")
    return out.sort_values(["batch_id", "step", "kind", "variable", "bar_id"], kind="stable",
                           ignore_index=True)


def _from_ns(col: pd.Series) -> pd.Series:
    """Int64 nanoseconds (or their text) -> datetime64[ns, UTC], exactly (no float on the way)."""
    if col.dtype.kind in "iu" or str(col.dtype) == "Int64":
        ns = col.astype("Int64")
    else:
        ns = pd.to_numeric(col, dtype_backend="numpy_nullable").astype("Int64")
    # numpy's NaT is the smallest int64
    raw = ns.to_numpy(dtype="int64", na_value=np.iinfo(np.int64).min)
    return pd.Series(raw.view("datetime64[ns]"), index=col.index).dt.tz_localize("UTC")


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


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def shown_path(path) -> str:
    """A path as messages show it: relative to the working folder when inside it, else its name.

    Messages reach API clients and logs; absolute paths would tell them about the
    server's layout.
    """
    p = Path(path)
    try:
        return str(p.absolute().relative_to(Path.cwd()))
    except ValueError:
        return p.name


_WAITING = ".waiting."


def _others_waiting(path: str | None) -> bool:
    """Whether another live process has left a marker that it waits for ``path``'s lock."""
    if path is None:
        return False
    p = Path(path)
    try:
        markers = [m for m in p.parent.iterdir() if m.name.startswith(p.name + _WAITING)]
    except OSError:
        return False
    for m in markers:
        pid = m.name[len(p.name + _WAITING):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:      # left by a process that died: clear it
            m.unlink(missing_ok=True)
            continue
        except PermissionError:         # alive, but another user's
            pass
        return True
    return False


def _connect_duckdb(path: str, name: str, timeout: float, *, give_way: bool):
    """``duckdb.connect(path)``, waiting up to ``timeout`` s for another process's lock.

    While it waits it leaves a marker (``<file>.waiting.<pid>.<n>``) that tells a
    shared store (the service) to let go. A shared opener (``give_way``) itself
    waits while others have markers, so a command is not starved by a busy service.
    """
    import duckdb

    if path == ":memory:":
        return duckdb.connect(path)
    deadline = time.monotonic() + timeout
    marker: Path | None = None
    delay = 0.002
    try:
        while True:
            if give_way and time.monotonic() < deadline and _others_waiting(path):
                time.sleep(0.005)
                continue
            try:
                return duckdb.connect(path)
            except duckdb.IOException as exc:
                text = str(exc)
                if "lock" not in text.lower():
                    raise StoreError(f"store {name}: {text.replace(path, name)}") from None
                if time.monotonic() >= deadline:
                    pid = re.search(r"PID (\d+)", text)
                    holder = f"process {pid.group(1)}" if pid else "another process"
                    raise StoreError(f"store {name}: {holder} has held its lock for more than "
                                     f"{timeout:g} s (a long 'recovery ingest'?); try again later") from None
            except duckdb.Error as exc:
                raise StoreError(f"store {name}: {str(exc).replace(path, name)}") from None
            if marker is None and not give_way:
                marker = Path(f"{path}{_WAITING}{os.getpid()}.{threading.get_ident()}")
                try:
                    marker.touch()
                except OSError:         # a read-only folder: wait without announcing
                    marker = None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
