"""What the engineers' side writes: recommendations, decisions, final-decision heads,
idempotency keys, and the assessment cache the service workers share."""

from __future__ import annotations

import json
from typing import Iterable

import pandas as pd

from recovery.data.store.tables import filters, list_table, now

__all__ = ["Decisions"]


class Decisions:
    """Mixin of :class:`~recovery.data.store.Store`: recommendations and decisions (append-only)."""

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
                    json.dumps(plan), json.dumps(expected or {}), partner, now()))
        return rid

    def recommendations(self, *, process: str | None = None, partner: str | None = None) -> pd.DataFrame:
        """Recommendations, oldest first; ``plan`` and ``expected`` parsed from JSON."""
        return list_table(self, "recommendations", "created_at", ["plan", "expected"], process=process,
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
                    json.dumps(plan) if plan is not None else None, comment, partner, now()))
        return did

    def decisions(self, *, partner: str | None = None) -> pd.DataFrame:
        """Decisions, oldest first; ``plan`` parsed from JSON."""
        return list_table(self, "decisions", "decided_at", ["plan"], partner=partner)

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
        where, params = filters(process=process, batch_ids=batch_ids, alias="h")
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
                         (int(token_id), key, request_sha256, now()))
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


    # ---- the assessment cache (shared by service workers) -------------------
    def put_assessment(self, *, process: str, batch_id: str, input_hash: str, body: dict) -> bool:
        """Keep a batch's assessment under its input hash; False when one is there already.

        The hash names everything the assessment depends on (model version, seed,
        the batch's rows), so an entry is never replaced: two workers that
        assessed the same inputs at once keep the first.
        """
        got = self._rows("INSERT INTO assessments (process, batch_id, input_hash, body, created_at) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING input_hash",
                         (process, str(batch_id), input_hash, json.dumps(body, default=str), now()))
        return bool(got)

    def assessment(self, *, process: str, batch_id: str, input_hash: str) -> dict | None:
        """The assessment kept by :meth:`put_assessment` for these inputs, or None."""
        rows = self._rows("SELECT body FROM assessments WHERE process = ? AND batch_id = ? AND input_hash = ?",
                          (process, str(batch_id), input_hash))
        return json.loads(rows[0][0]) if rows else None
