"""The service's logic, independent of HTTP: who sees which batch, what a batch page shows,
and the writes (step rows, hand-overs, decisions, tokens) with their audit entries.

:mod:`recovery.service.app` puts it behind FastAPI; the tests call it directly too.
Domain rules live below: batch status and outcome labels in :mod:`recovery.status`,
decision and plan rules in :mod:`recovery.decisions`, the ownership rule in
:mod:`recovery.service.auth`.

Speed: a request for a batch whose step data did not change costs a few small
queries (the token, the batch's owners, its data version) and, for a shown
recommendation, one audit entry. Each batch's assessment (recommendation,
predictions, status, page data) is kept in memory keyed by its data version
(:meth:`recovery.data.store.Store.data_versions`: rows are only ever added, so
an unchanged version means unchanged rows); the assessment itself is also kept
in the store under the hash of its inputs, so every worker of the service, and
a restarted one, reuses it instead of planning again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from recovery.decisions import DecisionConflict, DecisionError, decided_plan, input_hash, record_decision
from recovery.status import STATUSES, batch_status, outcome_label
from recovery.service.auth import Principal, authenticate, create_token, may_write, refused_row
from recovery.service.readable import readable_view

__all__ = ["Service", "NotFound", "Refused", "BadRequest", "Conflict", "MAX_BODY_BYTES", "MAX_ROWS", "INT64",
           "STATIC", "STATUSES"]

MAX_BODY_BYTES = 2 * 1024 * 1024
INT64 = (-(2 ** 63), 2 ** 63 - 1)
MAX_ROWS = 20_000
STATIC = Path(__file__).parent / "static"


class NotFound(Exception):
    """Unknown batch, or one the caller may not see (the same answer for both)."""


class Refused(Exception):
    """The caller's role or partner does not allow the action."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


class BadRequest(ValueError):
    """The request is well-formed JSON but its content cannot be accepted."""


class Conflict(Exception):
    """The batch already has a final decision (409); ``current`` is its id (-1: none)."""

    def __init__(self, message: str, current: int):
        super().__init__(message)
        self.current = current


@dataclass
class _Cached:
    """A batch's assessment, and the page data drawn from the same rows.

    ``version`` is the batch's data version (:meth:`Store.data_versions`) when
    its rows were read: the entry holds while the version does.
    """

    input_hash: str
    rec: object | None
    error: str | None
    predicted: dict
    status: str
    version: tuple | None = None
    page: dict = field(default_factory=dict)
    #: The batch view as encoded for HTTP (:meth:`Service.batch_view_encoded`), made once per
    #: entry: the view depends only on the entry, so the JSON of every later request is the same.
    view_encoded: bytes | None = field(default=None, compare=False, repr=False)

    def stored(self) -> dict:
        """What the store keeps for other workers (JSON; the page is redrawn from the rows)."""
        rec = None if self.rec is None else {**self.rec.to_dict(), "latency_s": self.rec.latency_s}
        return {"rec": rec, "error": self.error, "predicted": self.predicted, "status": self.status}

    @classmethod
    def from_stored(cls, key: str, body: dict) -> "_Cached":
        return cls(key, _recommendation(body["rec"]), body["error"], body["predicted"], body["status"])


def _recommendation(d: dict | None):
    """A :class:`~recovery.recommend.Recommendation` back from its ``to_dict`` (JSON) form."""
    if d is None:
        return None
    from recovery.recommend import Recommendation

    d = dict(d)
    d["reasons"] = tuple(d["reasons"])
    d["failed_checks"] = tuple((int(f["step"]), f["characteristic"]) for f in d["failed_checks"])
    return Recommendation(**d)


#: ``Service.current``'s default: the caller did not read the batch's data version.
_UNREAD = object()


class Service:
    """The service's logic, independent of HTTP (the tests call it directly too).

    Parameters
    ----------
    store_url : str
        See :func:`recovery.data.store.open_store`.
    model_dir : str or Path
        A model saved by ``recovery fit``.
    data_dir : str or Path, optional
        Where appended payloads (inbox) and quarantine files are kept.
    seed : int
        Seed of every recommendation (the same inputs give the same answer).
    pool_size : int
        Store connections (PostgreSQL) or DuckDB cursors the service's threads share.
    """

    def __init__(self, store_url: str, model_dir: str | Path, *, data_dir: str | Path | None = None,
                 seed: int = 0, pool_size: int = 8):
        from recovery.data.store import open_store
        from recovery.pipeline import load_model, load_posterior

        # shared: a DuckDB file stays usable by `recovery tokens` and `recovery ingest`
        self.store = open_store(store_url, shared=True, pool_size=pool_size)
        self.model = load_model(model_dir)
        # plans use the calibrated physics when `recovery fit` saved one beside the model
        self.posterior = load_posterior(model_dir)
        self.process = self.model.graph_.process
        self.model_version = self.model.version_.id
        self.seed = seed
        if data_dir is None:
            import platformdirs

            data_dir = Path(platformdirs.user_data_dir("recovery")) / "service"
        self.data_dir = Path(data_dir)
        (self.data_dir / "inbox").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "quarantine").mkdir(parents=True, exist_ok=True)
        self._db = self.store.session       # a connection of the calling thread's own
        self._plan = threading.Lock()       # recommendations are CPU-bound: one at a time
        self._cache: dict[str, _Cached] = {}
        self._measured: dict[str, tuple] = {}   # batch -> (input hash, measure JSON, error)
        self._partners = tuple(pt.id for pt in self.process.partners)
        self._step_partner = {s.index: s.partner for s in self.process.steps}
        # Batch ids are born at the first step: only its partner starts batches.
        self._first_partner = self.process.steps[0].partner

    # ---- access ------------------------------------------------------------
    def authenticate(self, header: str | None) -> Principal | None:
        with self._db():
            return authenticate(self.store, header)

    def _owners(self, batch_ids: list[str] | None = None) -> dict[str, set[str]]:
        """batch -> its owners: partners with step data in it, and those it was handed to."""
        return self._index(batch_ids)[0]

    def _index(self, batch_ids: list[str] | None = None) -> tuple[dict[str, set[str]], dict[str, tuple]]:
        """(batch -> owners, batch -> data version): what every request for a batch asks first."""
        with self._db():
            return self.store.owners_and_versions(self.process.name, batch_ids)

    def visible_batches(self, who: Principal, owners: dict[str, set[str]] | None = None) -> list[str]:
        owners = self._owners() if owners is None else owners
        ids = [b for b, pts in owners.items() if who.all_partners or who.partner in pts]
        return sorted(ids, key=_batch_key)

    def check_visible(self, who: Principal, batch_id: str) -> tuple | None:
        """Raise :class:`NotFound` unless ``who`` may see the batch; returns its data version."""
        owners, versions = self._index([batch_id])
        pts = owners.get(batch_id)
        if not pts or not (who.all_partners or who.partner in pts):
            raise NotFound(batch_id)
        return versions.get(batch_id)

    # ---- data --------------------------------------------------------------
    def history(self, batch_id: str) -> pd.DataFrame:
        with self._db():
            return self.store.read_steps(process=self.process.name, batch_ids=[batch_id])

    def _input_hash(self, history: pd.DataFrame) -> str:
        """sha256 of the model version, the calibrated physics (if any), the seed and the batch's rows.

        The store returns rows in a canonical order (batch, step, kind, variable,
        bar), and pandas' row hash has a fixed key, so the same data give the
        same hash in every process.
        """
        return input_hash(history, self.model_version, self.seed,
                          None if self.posterior is None else self.posterior.fingerprint)

    def current(self, batch_id: str, version: tuple | None | object = _UNREAD) -> _Cached:
        """The batch's assessment for its stored rows, read only when they changed.

        ``version`` is the batch's data version when the caller has it (None: no
        rows), read before this call.
        """
        if version is _UNREAD:
            with self._db():
                version = self.store.data_versions(self.process.name, [batch_id]).get(batch_id)
        hit = self._cache.get(batch_id)
        if hit is not None and hit.version == version:
            return hit
        # read after the version: rows added in between only make the entry newer than its key
        return self.assess(batch_id, self.history(batch_id), version=version)

    def assess(self, batch_id: str, history: pd.DataFrame | None = None, *,
               version: tuple | None = None) -> _Cached:
        """The batch's recommendation, predictions and status (cached by input hash).

        ``history`` is the batch's stored step data when the caller has read it
        already; ``version`` its data version read before it (see :meth:`current`).
        The store keeps each assessment for every worker: a worker that finds one
        does not plan again.
        """
        if history is None:
            history = self.history(batch_id)
        key = self._input_hash(history)
        hit = self._cache.get(batch_id)
        if hit is None or hit.input_hash != key:
            with self._db():
                kept = self.store.assessment(process=self.process.name, batch_id=batch_id, input_hash=key)
            hit = _Cached.from_stored(key, kept) if kept is not None else None
        if hit is None:
            with self._plan:
                hit = self._cache.get(batch_id)
                if hit is None or hit.input_hash != key:
                    hit = self._plan_batch(batch_id, history, key)
        fresh = _Cached(hit.input_hash, hit.rec, hit.error, hit.predicted, hit.status, version,
                        _page(self.process, history))
        self._cache[batch_id] = fresh
        return fresh

    def _plan_batch(self, batch_id: str, history: pd.DataFrame, key: str) -> _Cached:
        """Run the planner on the batch's rows; keep the result and the recommendation in the store."""
        from recovery.recommend import RecommendationError, recommend

        rec, error, predicted = None, None, {}
        last = int(history["step"].max()) if len(history) else 0
        try:
            rec = recommend(history, self.model, batch=batch_id, seed=self.seed, posterior=self.posterior)
        except (RecommendationError, ValueError) as exc:
            error = str(exc)
        if rec is not None:
            predicted = self._predicted(history, rec)
        status = batch_status(rec, last_step=last, n_steps=self.process.n_steps)
        out = _Cached(key, rec, error, predicted, status)
        with self._db():
            with self.store.transaction():
                # another worker may have planned the same inputs meanwhile: keep its answer
                if not self.store.put_assessment(process=self.process.name, batch_id=batch_id,
                                                 input_hash=key, body=out.stored()):
                    kept = self.store.assessment(process=self.process.name, batch_id=batch_id, input_hash=key)
                    return _Cached.from_stored(key, kept)
                if rec is not None:
                    self.store.add_recommendation(
                        process=self.process.name, batch_id=batch_id, after_step=rec.step, agent=rec.agent,
                        plan={r["lever"]: r["value"] for r in rec.plan},
                        expected={"p_accept": rec.p_accept, "decision": rec.decision, "input_hash": key,
                                  # the counterfactual of a followed recommendation (track record)
                                  "p_accept_do_nothing": rec.p_accept_do_nothing,
                                  "model_version": self.model_version})
        return out

    def _predicted(self, history: pd.DataFrame, rec) -> dict:
        # levers already used come from the history; the rest default to nominal
        plan = {r["lever"]: r["value"] for r in rec.plan}
        out = {}
        for name, pl in (("nothing", None), ("plan", plan)):
            pr = self.model.predict(history, pl, seed=self.seed)
            out[name] = {k: e.to_dict() for k, e in pr.final.items()}
        return out

    def append(self, who: Principal, batch_id: str, rows: list[dict]) -> tuple[int, dict]:
        """Validate and store step data of one batch; returns (HTTP status, ingest answer)."""
        from recovery.data.ingest import IngestError, ingest

        if not rows:
            raise BadRequest("no rows")
        for i, r in enumerate(rows):
            b = r.get("batch_id")
            if b is not None and str(b) != batch_id:
                raise BadRequest(f"row {i}: batch_id '{b}' is not the batch of the URL ('{batch_id}')")
            why = refused_row(who, r, self._step_partner)
            if why is not None:
                raise Refused(f"row {i}: {why}")
        frame = pd.DataFrame([{**r, "batch_id": batch_id} for r in rows])
        for c, default in (("bar_id", None), ("timestamp", None), ("value", None)):
            if c not in frame:
                frame[c] = default
        frame["bar_id"] = pd.array(frame["bar_id"], dtype="Int64")
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{_safe(batch_id)}-token{who.token_id}-{uuid.uuid4().hex[:8]}"
        kept = self.data_dir / "inbox" / f"{name}.parquet"
        cols = ["batch_id", "bar_id", "step", "factory", "partner", "variable", "value", "unit", "kind",
                "timestamp"]
        frame = frame[[c for c in cols if c in frame] + [c for c in frame if c not in cols]]
        frame.to_parquet(kept, index=False)
        try:
            # The ownership check and the write see the same store: no other write in between.
            with self.store.exclusive():
                if not self._may_write(who, batch_id):
                    self.store.add_audit(actor=who.actor, partner=who.partner, role=who.role,
                                         action="append_refused", batch_id=batch_id,
                                         model_version=self.model_version, input_hash=_sha256_file(kept),
                                         payload={"rows": len(rows), "file": self._shown(kept)})
                    raise NotFound(batch_id)
                res = ingest(kept, store=self.store, process=self.process,
                             quarantine=self.data_dir / "quarantine" / f"{name}.csv")
                self.store.add_audit(actor=who.actor, partner=who.partner, role=who.role, action="append",
                                     batch_id=batch_id, model_version=self.model_version,
                                     input_hash=_sha256_file(kept),
                                     payload={"rows": len(rows), "accepted": res.accepted,
                                              "rejected": res.rejected, "file": self._shown(kept)})
        except IngestError as exc:
            raise BadRequest(self._shown(str(exc))) from None
        answer = res.to_json()
        answer["quarantine"] = self._shown(answer["quarantine"]) if answer["quarantine"] else None
        for r in answer["reasons"]:
            r["reason"] = self._shown(r["reason"])
        answer["received"] = self._shown(kept)
        if res.rejected:
            answer["message"] = (f"{res.rejected} of {res.rows} rows rejected (kept with their reasons in "
                                 f"{answer['quarantine']}); {res.accepted} accepted rows were stored")
            return 422, answer
        return 200, answer

    def _may_write(self, who: Principal, batch_id: str) -> bool:
        """The ownership rule for writes (:func:`recovery.service.auth.may_write`);
        call it in the block of the write."""
        owners = set() if who.all_partners else self._owners([batch_id]).get(batch_id, set())
        return may_write(who, owners, self._first_partner)

    def _shown(self, text) -> str:
        """``text`` (a path or a message) with the service's data folder left out."""
        text = str(text)
        for base in {str(self.data_dir), str(self.data_dir.resolve())}:
            text = text.replace(base + "/", "")
        return text

    def handover(self, who: Principal, batch_id: str, partner: str, comment: str = "") -> tuple[int, dict]:
        """Hand a batch to another partner (it may then read and append); engineer or admin.

        Returns (201, answer) when recorded, (200, answer) when the partner owns the batch already.
        """
        if not who.can_decide:
            raise Refused("your role may not hand batches over (engineer or admin needed)")
        if partner not in self._partners:
            raise BadRequest(f"unknown partner '{partner}'; the process has {', '.join(self._partners)}")
        with self._db():
            self.check_visible(who, batch_id)
            with self.store.transaction():
                if partner in self._owners([batch_id]).get(batch_id, ()):
                    return 200, {"batch_id": batch_id, "partner": partner, "handover_id": None,
                                 "message": f"partner '{partner}' owns batch {batch_id} already"}
                hid = self.store.add_handover(process=self.process.name, batch_id=batch_id,
                                              partner=partner, actor=who.actor)
                aid = self.store.add_audit(actor=who.actor, partner=who.partner, role=who.role,
                                           action="handover", batch_id=batch_id,
                                           model_version=self.model_version,
                                           payload={"to": partner, "handover_id": hid, "comment": comment})
        return 201, {"batch_id": batch_id, "partner": partner, "handover_id": hid, "audit_id": aid}

    # ---- answers -----------------------------------------------------------
    def recommendation(self, who: Principal, batch_id: str) -> dict:
        """The batch's current recommendation; showing it is written to the audit trail."""
        version = self.check_visible(who, batch_id)
        return self._answer_shown(who, batch_id, self.current(batch_id, version))

    def _answer_shown(self, who: Principal, batch_id: str, a: _Cached) -> dict:
        """The recommendation's answer, once its audit entry is committed."""
        body = self._answer(batch_id, a)
        self._audit_shown(who, batch_id, a)
        return body

    def _answer(self, batch_id: str, a: _Cached) -> dict:
        """The recommendation's answer (a new dict; the same for every caller)."""
        body = {"batch_id": batch_id, "status": a.status, "input_hash": a.input_hash,
                "model_version": self.model_version}
        if a.rec is None:
            body.update({"recommendation": None, "message": a.error})
        else:
            body.update({"recommendation": a.rec.to_dict(), "predicted": a.predicted})
        return body

    def _audit_shown(self, who: Principal, batch_id: str, a: _Cached) -> None:
        """The audit entry of a shown recommendation, committed before the answer leaves."""
        # committed with the entries of concurrent requests (group commit)
        self.store.add_audit_now(actor=who.actor, partner=who.partner, role=who.role,
                                 action="recommendation_shown", batch_id=batch_id,
                                 model_version=self.model_version, input_hash=a.input_hash,
                                 payload={"decision": a.rec.decision if a.rec else None,
                                          "p_accept": a.rec.p_accept if a.rec else None,
                                          "plan": a.rec.plan if a.rec else None, "status": a.status})

    def measurement(self, who: Principal, batch_id: str, top: int = 3) -> dict:
        """Which extra measurement pays on the batch now (``recovery measure``), the best ``top``.

        Cached by input hash like the recommendation; a batch with nothing to
        decide gets ``"measure": null`` and the reason.
        """
        from recovery.voi.batch import MeasureError, measure

        self.check_visible(who, batch_id)
        h = self.history(batch_id)
        key = self._input_hash(h)
        hit = self._measured.get(batch_id)
        if hit is None or hit[0] != key:
            with self._plan:
                try:
                    a = measure(h, self.model, batch=batch_id, seed=self.seed, posterior=self.posterior)
                    hit = (key, a.to_dict(), None)
                except (MeasureError, ValueError) as exc:
                    hit = (key, None, str(exc))
                self._measured[batch_id] = hit
        body = {"batch_id": batch_id, "input_hash": key, "model_version": self.model_version}
        if hit[1] is None:
            return {**body, "measure": None, "message": hit[2]}
        return {**body, "measure": {**hit[1], "candidates": hit[1]["candidates"][:top]}}

    def batch_view(self, who: Principal, batch_id: str) -> dict:
        """What the web page draws: readings, bands, inspections, levers, and the recommendation."""
        version = self.check_visible(who, batch_id)
        a = self.current(batch_id, version)
        self._audit_shown(who, batch_id, a)
        return self._view(batch_id, a)

    def batch_view_encoded(self, who: Principal, batch_id: str, encode) -> bytes:
        """:meth:`batch_view` as ``encode(view)``, encoded once per assessment.

        The view of an unchanged batch is the same for every caller and every
        request, so the HTTP layer's encoding (``encode``: dict -> bytes) runs
        once per batch and data version instead of per request (it was most of
        a cached view's time in the service). The visibility check and the
        audit entry of the shown recommendation still happen on every request,
        before the answer leaves.
        """
        version = self.check_visible(who, batch_id)
        a = self.current(batch_id, version)
        self._audit_shown(who, batch_id, a)
        if a.view_encoded is None:     # two threads may both encode it: the same bytes either way
            a.view_encoded = encode(self._view(batch_id, a))
        return a.view_encoded

    def _view(self, batch_id: str, a: _Cached) -> dict:
        body = self._answer(batch_id, a)   # the same rows as the readings drawn
        body.update(a.page)
        return readable_view(body, self.process)   # percentages, rounded plan values, the root cause in a sentence

    def batches(self, who: Principal, status: str | None = None) -> list[dict]:
        """The caller's batches with their status (only those with ``status`` when given).

        One query for every batch's owners and data version; rows are read (in
        one query) only for the batches whose rows changed since they were last
        assessed.
        """
        out = []
        owners, versions = self._index()
        ids = self.visible_batches(who, owners)
        stale = [b for b in ids if (hit := self._cache.get(b)) is None or hit.version != versions.get(b)]
        by_batch: dict[str, pd.DataFrame] = {}
        if stale:       # one query for every batch whose rows changed
            with self._db():
                steps = self.store.read_steps(process=self.process.name, batch_ids=stale)
            empty = steps.iloc[:0]
            by_batch = {str(b): g for b, g in steps.groupby(steps["batch_id"].astype(str), sort=False)}
            by_batch = {b: by_batch.get(b, empty) for b in stale}
        for b in ids:
            a = self.assess(b, by_batch[b], version=versions.get(b)) if b in by_batch else self._cache[b]
            if status and a.status != status:
                continue
            rec = a.rec
            out.append({"batch_id": b, "status": a.status, "step": rec.step if rec else None,
                        "decision": rec.decision if rec else None,
                        "p_accept": rec.p_accept["mean"] if rec else None,
                        "partners": sorted(owners.get(b, ()))})
        return out

    def record_engineer_decision(self, who: Principal, batch_id: str, decision: str, comment: str,
               plan: dict[str, float] | None, *, supersedes: int | None = None,
               idempotency_key: str | None = None) -> tuple[int, dict]:
        """Record an engineer's decision; returns (HTTP status, answer).

        One decision per batch and recommendation step is final: another one
        raises :class:`Conflict` unless ``supersedes`` names the current final
        one. With ``idempotency_key`` (per token) the first answer is kept and a
        replay of the same request returns it and stores nothing; the same key
        with another request is refused.
        """
        if not who.can_decide:
            raise Refused("your role may not record decisions (engineer or admin needed)")
        version = self.check_visible(who, batch_id)
        request_sha = hashlib.sha256(json.dumps(
            {"batch_id": batch_id, "decision": decision, "comment": comment, "plan": plan,
             "supersedes": supersedes}, sort_keys=True).encode()).hexdigest()
        if idempotency_key is not None:
            with self._db():
                first = self.store.idempotency_answer(token_id=who.token_id, key=idempotency_key)
            if first is not None:
                return self._replay(idempotency_key, request_sha, first)
        a = self.current(batch_id, version)
        if a.rec is None:
            raise BadRequest(f"batch {batch_id} has no recommendation to decide on: {a.error}")
        try:
            final = decided_plan(self.process, a.rec, decision, plan)
        except DecisionError as exc:
            raise BadRequest(str(exc)) from None
        st = self.store
        with self._db():
            with st.transaction():
                if idempotency_key is not None:
                    # claimed in the decision's transaction: a concurrent twin waits or sees it
                    first = st.claim_idempotency_key(token_id=who.token_id, key=idempotency_key,
                                                     request_sha256=request_sha)
                    if first is not None:
                        return self._replay(idempotency_key, request_sha, first)
                try:
                    answer = record_decision(
                        st, process=self.process, batch_id=batch_id, rec=a.rec, decision=decision,
                        comment=comment, plan=final, actor=who.actor, partner=who.partner, role=who.role,
                        model_version=self.model_version, input_hash=a.input_hash, supersedes=supersedes)
                except DecisionConflict as exc:
                    raise self._conflict(batch_id, exc.after_step, exc.current, supersedes) from None
                if idempotency_key is not None:
                    st.finish_idempotency_key(token_id=who.token_id, key=idempotency_key, status=201,
                                              response=answer)
        return 201, answer

    @staticmethod
    def _replay(key: str, request_sha: str, first: tuple) -> tuple[int, dict]:
        sha, status, answer = first
        if sha != request_sha:
            raise BadRequest(f"Idempotency-Key '{key}' was used for a different request; "
                             f"use a new key for a new request")
        if status is None:       # cannot happen inside one transaction; said plainly if it does
            raise Conflict(f"the request with Idempotency-Key '{key}' is still being processed", -1)
        return status, answer

    @staticmethod
    def _conflict(batch_id: str, step: int, current: int, supersedes: int | None) -> Conflict:
        if supersedes is None:
            return Conflict(f"batch {batch_id} already has a final decision after step {step} "
                            f"(decision {current}); to replace it, send \"supersedes\": {current}", current)
        if current < 0:
            return Conflict(f"batch {batch_id} has no final decision after step {step} to supersede; "
                            f"send the decision without \"supersedes\"", current)
        return Conflict(f"decision {supersedes} is not the final decision of batch {batch_id} after step "
                        f"{step} (decision {current} is); to replace that one, send \"supersedes\": "
                        f"{current}", current)

    def audit(self, who: Principal, batch_id: str | None = None) -> list[dict]:
        """The audit trail the caller may see: its own entries and every entry about
        the batches it owns, whoever made them (another owner's appends and
        decisions, hand-overs, refused writes)."""
        with self._db():
            if batch_id is not None:
                self.check_visible(who, batch_id)
                df = self.store.audit(batch_ids=[batch_id])
            elif who.all_partners:
                df = self.store.audit()
            else:
                df = self.store.audit(partner=who.partner, or_batch_ids=self.visible_batches(who))
        return [_jsonable(r) for r in df.to_dict("records")]

    def labelled_decisions(self, who: Principal) -> list[dict]:
        """Decisions with the batch's later outcome, for retraining.

        ``outcome`` is the final inspection's verdict once its readings are
        stored: ``rejected`` when a sample mean lies outside its final band
        (the gate rule of every inspection, as the simulator applies it),
        ``accepted`` otherwise; ``pending`` before that. ``final`` is False for
        a decision another one superseded (what was done is the final one).
        """
        if not who.can_decide:
            raise Refused("engineer or admin role needed")
        with self._db():
            dec = self.store.decisions(partner=None if who.all_partners else who.partner)
            final = set(self.store.final_decisions(self.process.name)["decision_id"].tolist())
        outcomes: dict[str, str] = {}      # a batch decided on many times is read once
        for b in dec["batch_id"].astype(str).unique() if len(dec) else ():
            outcomes[b] = outcome_label(self.model, self.history(b), b)
        return [_jsonable({**r, "outcome": outcomes[str(r["batch_id"])], "final": int(r["id"]) in final})
                for r in dec.to_dict("records")]

    def new_token(self, who: Principal, partner: str, role: str, name: str | None) -> dict:
        if who.role != "admin":
            raise Refused("admin role needed")
        with self._db():
            tid, token = create_token(self.store, partner=partner, role=role, name=name,
                                      partners=self._partners)
            self.store.add_audit(actor=who.actor, partner=who.partner, role=who.role, action="token_created",
                                 payload={"token_id": tid, "partner": partner, "role": role})
        return {"token_id": tid, "token": token, "partner": partner, "role": role}

    def revoke_token(self, who: Principal, token_id: int) -> bool:
        if who.role != "admin":
            raise Refused("admin role needed")
        with self._db():
            done = self.store.revoke_token(token_id)
            if done:
                self.store.add_audit(actor=who.actor, partner=who.partner, role=who.role,
                                     action="token_revoked", payload={"token_id": token_id})
        return done

    # ---- plant reports -------------------------------------------------------
    def health_report(self, who: Principal, since: float | None = None, gate_level: float = 0.5) -> dict:
        """``recovery health`` for the caller: a partner's token gets its own factories,
        the faults at its steps, and a change test on its own step rows only."""
        from recovery.health import plant_health

        partner = None if who.all_partners else who.partner
        with self._db():
            history = self.store.read_steps(process=self.process.name, partner=partner)
        return plant_health(self.model, history, since=since, gate_level=gate_level,
                            partner=partner).to_dict()

    def track_record(self, who: Principal, since: str | None = None) -> dict:
        """``recovery track-record`` over the batches the caller may read (the batch pages' rule)."""
        from recovery.track_record import track_record

        def visible(process: str, ids: list[str]) -> set[str]:
            bo = self.store.batch_owners(process, ids)
            return {str(b) for b, pt in zip(bo["batch_id"], bo["partner"])
                    if who.all_partners or pt == who.partner}

        with self._db():
            rep = track_record(self.store, since=since, visible=visible).to_dict()
        return json.loads(json.dumps(rep, default=str))   # timestamps as text, nested rows included

    def info(self) -> dict:
        m = self.model
        return {"process": self.process.name, "process_digest": self.process.digest,
                "n_steps": self.process.n_steps, "model_version": self.model_version,
                "fit": {"method": m.report_.method, "batches": m.report_.n_batches,
                        "rhat_max": m.report_.rhat_max, "divergences": m.report_.divergences},
                "partners": list(self._partners), "statuses": list(STATUSES)}


def _page(p, h: pd.DataFrame) -> dict:
    """The batch page's data from the batch's rows: readings against bands and gates, levers."""
    meas = h[h["kind"] == "measurement"]
    lo, hi = p.final_bands()
    chars = []
    for c, ch in enumerate(p.characteristics):
        m = meas[meas["variable"] == ch.name]
        gates = []
        for s in p.inspection_steps:
            glo, ghi = p.gate_bands(s)
            if np.isfinite(glo[c]) or np.isfinite(ghi[c]):
                gates.append({"step": s, "lower": _num(glo[c]), "upper": _num(ghi[c])})
        chars.append({"name": ch.name, "unit": ch.unit, "lower": _num(lo[c]), "upper": _num(hi[c]),
                      "gates": gates,
                      "readings": [{"step": int(s), "value": float(v)}
                                   for s, v in zip(m["step"], m["value"]) if np.isfinite(v)]})
    levers = [{"name": lv.name, "step": lv.step, "unit": lv.unit, "nominal": lv.nominal,
               "low": lv.low, "high": lv.high} for lv in p.levers]
    return {"process": p.name, "n_steps": p.n_steps, "inspections": list(p.inspection_steps),
            "last_step": int(h["step"].max()) if len(h) else 0, "characteristics": chars, "levers": levers}


def _batch_key(b: str):
    tail = b.rsplit("-", 1)[-1]
    return (0, int(tail), b) if tail.isdigit() else (1, 0, b)


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)[:60]


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _num(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (pd.Timestamp, datetime)):
            v = v.isoformat()
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating, float)):
            v = float(v) if np.isfinite(v) else None
        elif v is pd.NA or v is pd.NaT:
            v = None
        out[k] = v
    return out

