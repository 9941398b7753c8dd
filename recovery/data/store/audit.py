"""The audit trail: append-only (no update, no delete), one entry per audited act.

:meth:`AuditTrail.add_audit` appends in the caller's transaction (a decision and
its entry commit together). :meth:`AuditTrail.add_audit_now` is for acts audited
on their own (a recommendation shown): concurrent callers are grouped into one
transaction (group commit), and each returns only once its entry is committed,
so an answer is never sent for an act whose entry a crash could lose.
"""

from __future__ import annotations

import json
import threading
from typing import Iterable

import pandas as pd

from recovery.data.store.tables import filters, list_table, now, parsed

__all__ = ["AuditTrail"]


class AuditTrail:
    """Mixin of :class:`~recovery.data.store.Store`: the audit trail."""

    def add_audit(self, *, actor: str, action: str, partner: str | None = None, role: str | None = None,
                  batch_id: str | None = None, model_version: str | None = None,
                  input_hash: str | None = None, payload: dict | None = None) -> int:
        """Append one entry to the audit trail; returns its id."""
        aid = self.next_id()
        self._exec("INSERT INTO audit (id, recorded_at, actor, partner, role, action, batch_id, model_version, "
                   "input_hash, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (aid, now(), actor, partner, role, action, batch_id, model_version, input_hash,
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
            return list_table(self, "audit", "recorded_at", ["payload"], partner=partner, batch_ids=batch_ids)
        ids = [str(b) for b in or_batch_ids]
        cond = "t.partner = ?" + (f" OR t.batch_id IN ({', '.join('?' * len(ids))})" if ids else "")
        extra, params = filters(batch_ids=batch_ids, alias="t")
        extra = extra.replace(" WHERE ", " AND ", 1)
        df = self._frame(f"SELECT * FROM audit t WHERE ({cond}){extra} ORDER BY t.id",
                         [partner, *ids, *params])
        return parsed(df, "recorded_at", ["payload"])

    def _add_audits(self, entries: list[dict]) -> list[int]:
        """Append entries in one transaction with two statements (their ids, then the rows)."""
        n = len(entries)
        series = "range(?)" if self.dialect == "duckdb" else "generate_series(1, ?)"
        with self.transaction():
            ids = [int(r[0]) for r in self._rows(f"SELECT nextval('recovery_ids') FROM {series}", (n,))]
            at = now()
            params = []
            for aid, e in zip(ids, entries):
                params += [aid, at, e["actor"], e["partner"], e["role"], e["action"], e["batch_id"],
                           e["model_version"], e["input_hash"], json.dumps(e["payload"] or {}, default=str)]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)
            self._exec("INSERT INTO audit (id, recorded_at, actor, partner, role, action, batch_id, "
                       f"model_version, input_hash, payload) VALUES {values}", params)
        return ids

    def add_audit_now(self, *, actor: str, action: str, partner: str | None = None, role: str | None = None,
                      batch_id: str | None = None, model_version: str | None = None,
                      input_hash: str | None = None, payload: dict | None = None) -> int:
        """Append one entry and return its id once it is committed (see the module docstring).

        Entries that threads of this process add at the same time share one
        transaction: the first caller writes everything queued so far, the
        others wait for it. If that transaction fails, every caller in it gets
        the error (none was acknowledged). Called inside a session or a
        transaction, the entry is written there, on its own.
        """
        if getattr(self._local, "depth", 0):
            # Inside the caller's session (or transaction, with which the entry then commits
            # or not), on its connection: a caller waiting for the group while holding a
            # connection could leave the writer of the group without one.
            return self.add_audit(actor=actor, action=action, partner=partner, role=role, batch_id=batch_id,
                                  model_version=model_version, input_hash=input_hash, payload=payload)
        entry = dict(actor=actor, action=action, partner=partner, role=role, batch_id=batch_id,
                     model_version=model_version, input_hash=input_hash, payload=payload)
        return self._audit_group.add(self, entry)


class _GroupCommit:
    """Entries waiting to be written together, and who is writing them."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queue: list[dict] = []
        self._writing = False

    def add(self, store, entry: dict) -> int:
        slot = {"entry": entry, "id": None, "error": None, "done": False}
        with self._cond:
            self._queue.append(slot)
            while not slot["done"]:
                if self._writing:
                    self._cond.wait()
                    continue
                # nobody writes: this caller writes every entry queued so far, its own included
                self._writing = True
                batch, self._queue = self._queue, []
                self._cond.release()
                try:
                    ids = store._add_audits([s["entry"] for s in batch])
                    for s, aid in zip(batch, ids):
                        s["id"] = aid
                except BaseException as exc:
                    for s in batch:
                        s["error"] = exc
                finally:
                    self._cond.acquire()
                    self._writing = False
                    for s in batch:
                        s["done"] = True
                    self._cond.notify_all()
        if slot["error"] is not None:
            raise slot["error"]
        return slot["id"]
