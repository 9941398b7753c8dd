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

Concurrency: threads of one process share a store (each session checks out
its own connection: a DuckDB cursor, or a pooled PostgreSQL connection).
DuckDB serialises writing transactions inside the process and admits one
process per file; PostgreSQL admits several processes (service workers). See
:mod:`recovery.data.store.engine`.

``assessments`` is the recommendation cache the service's workers share (a
batch's assessment under the hash of its inputs).

The modules: :mod:`~recovery.data.store.engine` (connections, sessions,
transactions, dialect shims), :mod:`~recovery.data.store.tables` (DDL, column
sets, conversions), :mod:`~recovery.data.store.steps` (processes, step data,
provenance), :mod:`~recovery.data.store.decisions` (recommendations, decisions,
idempotency, the assessment cache), :mod:`~recovery.data.store.access` (tokens,
hand-overs, owners), :mod:`~recovery.data.store.audit` (the audit trail).

Dialect differences are kept to three small shims: parameter markers, bulk
insert (DuckDB reads the DataFrame through a relation; PostgreSQL gets ``COPY``) and
how a result set becomes a DataFrame.

Layer: ``recovery.data``. The store imports only ``recovery.errors`` and
``recovery.data`` modules (ids), never the causal model, agents or shells.
"""

from __future__ import annotations

from recovery.data.store.access import Access
from recovery.data.store.audit import AuditTrail, _GroupCommit
from recovery.data.store.decisions import Decisions
from recovery.data.store.engine import (ENV_VAR, LOCK_TIMEOUT, POOL_SIZE, SHARED_IDLE, Engine, StoreError,
                                        default_url, shown_path)
from recovery.data.store.steps import IngestRecord, StepData, process_text
from recovery.data.store.tables import NO_BAR, ddl

__all__ = ["Store", "StoreError", "open_store", "default_url", "ENV_VAR", "IngestRecord", "shown_path",
           "NO_BAR", "LOCK_TIMEOUT", "SHARED_IDLE", "POOL_SIZE", "process_text"]


def open_store(url: str | None = None, *, shared: bool = False,
               lock_timeout: float = LOCK_TIMEOUT, pool_size: int = POOL_SIZE) -> "Store":
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
    pool_size : int
        Most connections (PostgreSQL) or DuckDB cursors open at once in this
        process; more concurrent sessions wait for one.

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
    return Store(url or default_url(), shared=shared, lock_timeout=lock_timeout,
                 pool_size=pool_size)


class Store(StepData, Decisions, Access, AuditTrail, Engine):
    """Step data and everything derived from it, in DuckDB or PostgreSQL.

    Parameters
    ----------
    url : str
        See :func:`open_store` (and ``shared``, ``lock_timeout``, ``pool_size`` there).

    Notes
    -----
    Writes of one ingest happen in one transaction (:meth:`transaction`); a
    failure rolls everything back. Every reader takes ``partner=`` to limit the
    rows to one partner's (the service uses it for access control). Threads may
    share one store (see the module docstring).
    """

    def __init__(self, url: str, *, shared: bool = False, lock_timeout: float = LOCK_TIMEOUT,
                 pool_size: int = POOL_SIZE):
        super().__init__(url, shared=shared, lock_timeout=lock_timeout, pool_size=pool_size)
        self._audit_group = _GroupCommit()
        self._start(ddl(self.dialect))
