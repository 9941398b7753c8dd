"""Connections, sessions and transactions: the part of the store that knows its engine.

Concurrency (what lets the service answer many requests at once):

- **DuckDB file or memory**: one process holds the file. Inside it, one base
  connection holds the file's lock and every thread gets a cursor of its own
  from it (a cursor is a connection to the same database instance), so reads
  run side by side. Writes take one in-process lock, so at most one writing
  transaction is open at a time: DuckDB's optimistic concurrency would answer
  two concurrent writes to the same row (a decision head, the id sequence)
  with a conflict error instead of making one wait.
- **PostgreSQL**: a pool of connections per process (``pool_size``), created
  on demand and reused; reads and writes run side by side and the server's
  locks and keys order concurrent writes. Several processes (service workers)
  may share one database.

A session (:meth:`Engine.session`) checks out one connection for the calling
thread; nested sessions and transactions of that thread join it.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

__all__ = ["Engine", "StoreError", "ENV_VAR", "LOCK_TIMEOUT", "SHARED_IDLE", "POOL_SIZE", "default_url",
           "shown_path"]

ENV_VAR = "RECOVERY_STORE"

#: How long an opener waits for another process to release a DuckDB file (s).
LOCK_TIMEOUT = 30.0
#: A shared store closes its DuckDB connection after this long without use (s).
SHARED_IDLE = 0.5
#: Connections (PostgreSQL) or cursors (DuckDB) a store opens at most in one process.
POOL_SIZE = 8


class StoreError(RuntimeError):
    """The store cannot be opened or a write failed; the message names the store."""


def default_url() -> str:
    """The store URL used when none is given: ``$RECOVERY_STORE`` or the user's DuckDB file."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    from platformdirs import user_data_dir

    return f"duckdb://{Path(user_data_dir('recovery')) / 'recovery.duckdb'}"


class Engine:
    """Connections of one store URL, shared by the threads of one process.

    Parameters
    ----------
    url : str
        See :func:`recovery.data.store.open_store`.
    shared : bool
        DuckDB file only: give the file up when idle or when another process waits.
    lock_timeout : float
        Seconds to wait for another process's DuckDB lock.
    pool_size : int
        Most connections (PostgreSQL) or cursors (DuckDB) open at once; a thread
        that finds them all in use waits for one.
    """

    def __init__(self, url: str, *, shared: bool = False, lock_timeout: float = LOCK_TIMEOUT,
                 pool_size: int = POOL_SIZE):
        if int(pool_size) < 1:
            raise StoreError(f"store pool_size must be at least 1, not {pool_size}")
        self.url = url
        self.lock_timeout = float(lock_timeout)
        self.pool_size = int(pool_size)
        self._local = threading.local()     # per thread: con, depth, in_tx, staged
        self._state = threading.Condition()  # guards everything below
        self._base = None                   # DuckDB: the connection that holds the file
        self._free: list = []               # idle connections (DuckDB cursors, PostgreSQL connections)
        self._open = 0                      # connections handed out or idle
        self._active = 0                    # threads in a session
        self._waiting = False               # shared: another process waits for the file
        self._last_used = 0.0
        self._closed = False
        # DuckDB: one writing transaction at a time in this process (see the module docstring)
        self._write = threading.RLock()
        self._path = None                   # the DuckDB file, when there is one
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

    def _start(self, ddl: list[str]) -> None:
        """Create the tables, then (shared DuckDB file) start the thread that lets the file go."""
        with self.transaction():
            for stmt in ddl:
                self._exec(stmt)
        if self.shared:
            self._stop = threading.Event()
            threading.Thread(target=self._release_when_idle, daemon=True,
                             name=f"store-release-{self.name}").start()

    # ---- connections ------------------------------------------------------
    def _new_connection(self):
        """A fresh connection (PostgreSQL) or cursor (DuckDB); call with ``_state`` held."""
        if self.dialect == "postgresql":
            import psycopg

            try:
                con = psycopg.connect(self.url, autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"store {self.name}: cannot connect: {exc}") from None
            con.execute("SET TIME ZONE 'UTC'")
            return con
        if self._base is None:
            self._base = _connect_duckdb(self._path or ":memory:", self.name, self.lock_timeout,
                                         give_way=self.shared)
            # Spill to disk instead of growing: ingest must stay near 1 GiB for 1e6 rows.
            self._base.execute("SET memory_limit = '512MB'")
            self._base.execute("SET preserve_insertion_order = false")
        return self._base.cursor()

    def _checkout(self):
        with self._state:
            while True:
                if self._closed:
                    raise StoreError(f"store {self.name} is closed")
                if self._waiting and self._open:
                    # another process waits for the file: let the sessions in flight end,
                    # the file go (see _checkin), and only then connect again
                    self._state.wait(0.02)
                    continue
                if self._free:
                    con = self._free.pop()
                    break
                if self._open < self.pool_size:
                    try:
                        con = self._new_connection()
                    except BaseException:
                        if not self._open:
                            self._close_base()
                        raise
                    self._open += 1
                    break
                self._state.wait(0.05)
            self._active += 1
            return con

    def _checkin(self, con) -> None:
        with self._state:
            self._active -= 1
            self._last_used = time.monotonic()
            if self.dialect == "postgresql" and (con.closed or con.broken):
                self._open -= 1         # a dead connection: the next checkout makes a new one
            else:
                self._free.append(con)
            if self._active == 0 and (self._closed or self._waiting):
                self._release_all()
            self._state.notify_all()

    def _release_all(self) -> None:
        """Close every idle connection (and DuckDB's file); call with ``_state`` held, none in use."""
        free, self._free = self._free, []
        for con in free:
            try:
                con.close()
            except Exception:       # closing what is already broken
                pass
        self._open -= len(free)
        self._close_base()

    def _close_base(self) -> None:
        base, self._base = self._base, None
        if base is not None:
            base.close()

    @property
    def _con(self):
        """The calling thread's connection (inside a session)."""
        return self._local.con

    @contextmanager
    def session(self) -> Iterator["Engine"]:
        """Hold one connection (and, for a shared DuckDB file, its lock) for a block of work.

        Nesting in the same thread joins the outer session. Every method opens
        one for itself, so callers need this only to make several calls one unit,
        or to keep a staged frame (:meth:`_stage`) on its connection across calls.
        """
        loc = self._local
        if getattr(loc, "depth", 0):
            loc.depth += 1
            try:
                yield self
            finally:
                loc.depth -= 1
            return
        loc.con = self._checkout()
        loc.depth, loc.in_tx, loc.staged = 1, False, {}
        try:
            yield self
        finally:
            con, loc.con, loc.depth = loc.con, None, 0
            self._checkin(con)

    def _release_when_idle(self) -> None:
        """Shared DuckDB file: let it go when idle, or as soon as another process waits for it."""
        while not self._stop.wait(0.02):
            waiting = _others_waiting(self._path)
            with self._state:
                self._waiting = waiting
                if self._open and self._active == 0 and (
                        waiting or time.monotonic() - self._last_used > SHARED_IDLE):
                    self._release_all()
                self._state.notify_all()

    def close(self) -> None:
        """Close every connection (sessions in flight close theirs when they end)."""
        with self._state:
            self._closed = True
            if self.shared:
                self._stop.set()
            if self._active == 0:
                self._release_all()
            self._state.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r}, {self.dialect})"

    # ---- dialect shims ----------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """DuckDB: hold the process's write lock (PostgreSQL orders writes itself)."""
        if self.dialect != "duckdb":
            yield
            return
        with self._write:
            yield

    @contextmanager
    def exclusive(self) -> Iterator["Engine"]:
        """A block of reads and writes no other thread's write interleaves with (DuckDB).

        For a check and the write it allows (the service's ownership check and
        the ingest of the rows): DuckDB holds the process's write lock for the
        block. PostgreSQL's keys and transactions guard the same cases across
        processes, so there it is just a session.
        """
        with self.session(), self._writing():
            yield self

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.session(), self._writing():
            self._execute(sql, params)

    def _execute(self, sql: str, params: Sequence[Any] = ()):
        """Run ``sql`` on the calling thread's connection (inside a session).

        DuckDB: a query that names a frame staged by :meth:`_stage` runs on that
        frame's relation, and takes no parameters (relations have none).
        """
        staged = self._local.staged
        if self.dialect == "duckdb":
            for name, (_, rel) in staged.items():
                if rel is not None and name in sql:
                    if params:
                        raise ValueError(f"a query of the staged frame {name} takes no parameters")
                    return rel.query(name, sql)
        return self._con.execute(self._sql(sql), tuple(params))

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Small result sets of plain values (no timestamps: DuckDB needs pytz for those)."""
        # nextval and INSERT/UPDATE ... RETURNING write; a plain SELECT does not
        reads = sql.lstrip().upper().startswith("SELECT") and "nextval" not in sql
        with self.session():
            if reads:
                return self._execute(sql, params).fetchall()
            with self._writing():
                return self._execute(sql, params).fetchall()

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        with self.session():
            return self._frame_in_session(sql, params)

    def _frame_in_session(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        if self.dialect == "duckdb":
            import warnings

            with warnings.catch_warnings():
                # duckdb's own DataFrame conversion trips a pandas 3.1 deprecation, not ours
                warnings.filterwarnings("ignore", message=".*inplace keyword.*")
                return self._execute(sql, params).df()
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
        with self.session(), self._writing():
            self._insert_frame_in_session(table, df, columns)

    def _insert_frame_in_session(self, table: str, df: pd.DataFrame, columns: list[str]) -> None:
        df = df[columns]
        if self.dialect == "duckdb":
            # Through a relation, not register(): inside a transaction a registered frame
            # stays alive until the commit (DuckDB keeps the dropped view for MVCC), so an
            # ingest would hold every chunk's frames in memory to the end.
            cols = ", ".join(columns)
            self._con.from_df(df).query(
                "_recovery_insert", f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _recovery_insert")
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

        A session is held in between: a staged frame lives on one connection.
        """
        hold = self.session()
        hold.__enter__()
        if self.dialect == "duckdb":
            # a relation, read by :meth:`_execute`; not register() (see _insert_frame_in_session)
            self._local.staged[name] = (hold, self._con.from_df(df))
            return
        self._local.staged[name] = (hold, None)
        types = {"i": "BIGINT", "f": "DOUBLE PRECISION", "b": "BOOLEAN"}
        cols = ", ".join(f"{c} {types.get(df[c].dtype.kind, 'TEXT')}" for c in df.columns)
        self._exec(f"CREATE TEMP TABLE {name} ({cols})")
        self._insert_frame(name, df, list(df.columns))

    def _unstage(self, name: str) -> None:
        try:
            if self.dialect != "duckdb":
                self._exec(f"DROP TABLE IF EXISTS {name}")
        finally:
            self._local.staged.pop(name)[0].__exit__(None, None, None)

    @contextmanager
    def transaction(self) -> Iterator["Engine"]:
        """All writes inside commit together or not at all (nesting joins the outer one)."""
        with self.session():
            loc = self._local
            if loc.in_tx:
                yield self
                return
            with self._writing():
                loc.in_tx = True
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
                    loc.in_tx = False

    def next_id(self) -> int:
        """A fresh id from the store's sequence (ids are unique across tables)."""
        return int(self._rows("SELECT nextval('recovery_ids')")[0][0])


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
