"""Who may do what: API tokens (hashes only), hand-overs, batch owners and known partners."""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from recovery.data.store.tables import filters, now
from simulators.definition import parse_process

__all__ = ["Access"]


class Access:
    """Mixin of :class:`~recovery.data.store.Store`: tokens, hand-overs and ownership."""

    def add_handover(self, *, process: str, batch_id: str, partner: str, actor: str) -> int:
        """Record that ``batch_id`` was handed to ``partner`` (it may then read and append); returns the id."""
        hid = self.next_id()
        self._exec("INSERT INTO handovers (id, process, batch_id, partner, actor, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (hid, process, str(batch_id), partner, actor, now()))
        return hid

    def batch_owners(self, process: str, batch_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """``batch_id, partner``: partners with step data in a batch, and those it was handed to
        (one query: the service asks it on every request)."""
        w1, p1 = filters(process=process, batch_ids=batch_ids, alias="o")
        w2, p2 = filters(process=process, batch_ids=batch_ids, alias="h")
        df = self._frame(f"SELECT DISTINCT o.batch_id, o.partner FROM observations o{w1} UNION "
                         f"SELECT h.batch_id, h.partner FROM handovers h{w2}", [*p1, *p2])
        if not len(df):
            return pd.DataFrame({"batch_id": pd.Series([], dtype=str), "partner": pd.Series([], dtype=str)})
        return df.astype(str)

    def owners_and_versions(self, process: str, batch_ids: Iterable[str] | None = None
                            ) -> tuple[dict[str, set[str]], dict[str, tuple[int, int]]]:
        """Each batch's owners (as :meth:`batch_owners`) and data version (as
        :meth:`~recovery.data.store.steps.StepData.data_versions`), in one query.

        The service asks both on every request for a batch; plain tuples, no frame.
        """
        w1, p1 = filters(process=process, batch_ids=batch_ids, alias="o")
        w2, p2 = filters(process=process, batch_ids=batch_ids, alias="h")
        rows = self._rows(f"SELECT o.batch_id, o.partner, COUNT(*), MAX(o.ingest_id) FROM observations o{w1} "
                          f"GROUP BY o.batch_id, o.partner UNION ALL "
                          f"SELECT h.batch_id, h.partner, 0, NULL FROM handovers h{w2}", [*p1, *p2])
        owners: dict[str, set[str]] = {}
        seen: dict[str, list[int]] = {}
        for b, pt, n, last in rows:
            b = str(b)
            owners.setdefault(b, set()).add(str(pt))
            if n:
                v = seen.setdefault(b, [0, -1])
                v[0], v[1] = v[0] + int(n), max(v[1], int(last))
        return owners, {b: (v[0], v[1]) for b, v in seen.items()}

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
                   "VALUES (?, ?, ?, ?, ?, ?)", (tid, token_hash, partner, role, name, now()))
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
        self._exec("UPDATE tokens SET revoked_at = ? WHERE id = ?", (now(), int(token_id)))
        return True

    def tokens(self) -> pd.DataFrame:
        """Every token (live and revoked), without the hashes."""
        return self._frame("SELECT id, partner, role, name, created_at, revoked_at FROM tokens ORDER BY id")

