"""The engineers' HTTP service: batches, recommendations, decisions, audit trail.

``create_app(store_url, model_dir)`` builds a FastAPI application (OpenAPI at
``/docs`` and ``/openapi.json``) over one store and one fitted causal model.
Every ``/api`` endpoint needs ``Authorization: Bearer <token>`` (see
:mod:`recovery.service.auth`). The ownership rule, the same for reading and
writing: a batch belongs to the partners with step data in it and to those an
engineer handed it to (``POST /api/batches/{id}/handover``); an admin token
owns every batch. A partner's token reads and appends to its batches only;
another partner's batch answers exactly as an unknown one (404). It appends
rows of the steps its partner runs only, and only the partner that runs the
process's first step may start a batch (the batch id is born there), so no
partner can take over a batch by writing to it. Every write to a batch (step
rows, refused attempts, hand-overs, decisions) is in the audit trail its owners
see. The web page is ``/`` with its assets under ``/static``, all served from
the package (no CDN).

Decisions: one final decision per batch and recommendation step. Another one
answers 409 unless its body names the decision it supersedes (audited); a
request with an ``Idempotency-Key`` header is answered once and replays get the
first answer without storing anything.

Data path: appended rows go through :func:`recovery.data.ingest.ingest` (the
same validation as ``recovery ingest``; rejected rows are kept in quarantine
with their reasons, and every payload is kept as received in the inbox
folder); recommendations come from :func:`recovery.recommend.recommend`; every
recommendation shown and every decision is appended to the store's audit trail
with who, when, the model version and a hash of the inputs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd

from recovery.data.ids import check_id
from recovery.decisions import DecisionConflict, DecisionError, decided_plan, input_hash, record_decision
from recovery.status import STATUSES, batch_status, outcome_label
from recovery.service.auth import ALL_PARTNERS, Principal, authenticate, create_token
from recovery.service.readable import readable_view

__all__ = ["Service", "create_app", "MAX_BODY_BYTES", "STATUSES"]

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
    input_hash: str
    rec: object | None
    error: str | None
    predicted: dict
    status: str


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
    """

    def __init__(self, store_url: str, model_dir: str | Path, *, data_dir: str | Path | None = None,
                 seed: int = 0):
        from recovery.data.store import open_store
        from recovery.pipeline import load_model, load_posterior

        # shared: a DuckDB file stays usable by `recovery tokens` and `recovery ingest`
        self.store = open_store(store_url, shared=True)
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
        self._db = self.store.session       # one store connection: one user at a time
        self._plan = threading.Lock()       # recommendations are CPU-bound: one at a time
        self._cache: dict[str, _Cached] = {}
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
        with self._db():
            bo = self.store.batch_owners(self.process.name, batch_ids)
        out: dict[str, set[str]] = {}
        for b, pt in zip(bo["batch_id"], bo["partner"]):
            out.setdefault(b, set()).add(pt)
        return out

    def visible_batches(self, who: Principal, owners: dict[str, set[str]] | None = None) -> list[str]:
        owners = self._owners() if owners is None else owners
        ids = [b for b, pts in owners.items() if who.all_partners or who.partner in pts]
        return sorted(ids, key=_batch_key)

    def check_visible(self, who: Principal, batch_id: str) -> None:
        pts = self._owners([batch_id]).get(batch_id)
        if not pts or not (who.all_partners or who.partner in pts):
            raise NotFound(batch_id)

    # ---- data --------------------------------------------------------------
    def history(self, batch_id: str) -> pd.DataFrame:
        with self._db():
            return self.store.read_steps(process=self.process.name, batch_ids=[batch_id])

    def _input_hash(self, history: pd.DataFrame) -> str:
        """sha256 of the model version, the seed and the batch's rows.

        The store returns rows in a canonical order (batch, step, kind, variable,
        bar), and pandas' row hash has a fixed key, so the same data give the
        same hash in every process.
        """
        return input_hash(history, self.model_version, self.seed)

    def assess(self, batch_id: str, history: pd.DataFrame | None = None) -> _Cached:
        """The batch's recommendation, predictions and status (cached by input hash).

        ``history`` is the batch's stored step data when the caller has read it
        already (the batch list reads every batch in one query).
        """
        from recovery.recommend import RecommendationError, recommend

        if history is None:
            history = self.history(batch_id)
        key = self._input_hash(history)
        hit = self._cache.get(batch_id)
        if hit is not None and hit.input_hash == key:
            return hit
        with self._plan:
            hit = self._cache.get(batch_id)
            if hit is not None and hit.input_hash == key:
                return hit
            rec, error, predicted = None, None, {}
            last = int(history["step"].max()) if len(history) else 0
            try:
                rec = recommend(history, self.model, batch=batch_id, seed=self.seed, posterior=self.posterior)
            except (RecommendationError, ValueError) as exc:
                error = str(exc)
            if rec is not None:
                predicted = self._predicted(history, rec)
            status = batch_status(rec, last_step=last, n_steps=self.process.n_steps)
            cached = _Cached(key, rec, error, predicted, status)
            self._cache[batch_id] = cached
            if rec is not None:
                with self._db():
                    self.store.add_recommendation(
                        process=self.process.name, batch_id=batch_id, after_step=rec.step, agent=rec.agent,
                        plan={r["lever"]: r["value"] for r in rec.plan},
                        expected={"p_accept": rec.p_accept, "decision": rec.decision, "input_hash": key,
                                  # the counterfactual of a followed recommendation (track record)
                                  "p_accept_do_nothing": rec.p_accept_do_nothing,
                                  "model_version": self.model_version})
            return cached

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
            if not who.all_partners and r.get("partner") != who.partner:
                raise Refused(f"row {i}: partner '{r.get('partner')}' is not your partner ('{who.partner}')")
            st = r.get("step")
            if not who.all_partners and self._step_partner.get(st, who.partner) != who.partner:
                raise Refused(f"row {i}: step {st} is run by partner '{self._step_partner[st]}', not by you")
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
            # One session: the ownership check and the write see the same store.
            with self._db():
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
        """The ownership rule for writes (call it in the session of the write).

        The caller's partner must own the batch (step data in it, or handed to
        it), or the batch must not exist yet and the caller's partner run the
        first step, where batch ids are born. A partner at a later step gets a
        batch by hand-over, so nobody can claim another partner's batch, or a
        batch id before its real owner uses it, by writing to it.
        """
        if who.all_partners:
            return True
        owners = self._owners([batch_id]).get(batch_id)
        if owners:
            return who.partner in owners
        return who.partner == self._first_partner

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
    def recommendation(self, who: Principal, batch_id: str, history: pd.DataFrame | None = None) -> dict:
        """The batch's current recommendation; showing it is written to the audit trail."""
        self.check_visible(who, batch_id)
        a = self.assess(batch_id, history)
        body = {"batch_id": batch_id, "status": a.status, "input_hash": a.input_hash,
                "model_version": self.model_version}
        if a.rec is None:
            body.update({"recommendation": None, "message": a.error})
        else:
            body.update({"recommendation": a.rec.to_dict(), "predicted": a.predicted})
        with self._db():
            self.store.add_audit(actor=who.actor, partner=who.partner, role=who.role,
                                 action="recommendation_shown", batch_id=batch_id,
                                 model_version=self.model_version, input_hash=a.input_hash,
                                 payload={"decision": a.rec.decision if a.rec else None,
                                          "p_accept": a.rec.p_accept if a.rec else None,
                                          "plan": a.rec.plan if a.rec else None, "status": a.status})
        return body

    def batch_view(self, who: Principal, batch_id: str) -> dict:
        """What the web page draws: readings, bands, inspections, levers, and the recommendation."""
        self.check_visible(who, batch_id)
        p = self.process
        h = self.history(batch_id)
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
        body = self.recommendation(who, batch_id, h)      # the same rows as the readings drawn
        body.update({"process": p.name, "n_steps": p.n_steps, "inspections": list(p.inspection_steps),
                     "last_step": int(h["step"].max()) if len(h) else 0, "characteristics": chars,
                     "levers": levers})
        return readable_view(body, p)   # percentages, rounded plan values, the root cause in a sentence

    def batches(self, who: Principal, status: str | None = None) -> list[dict]:
        out = []
        owners = self._owners()
        ids = self.visible_batches(who, owners)
        with self._db():
            steps = self.store.read_steps(process=self.process.name, batch_ids=ids)
        empty = steps.iloc[:0]
        by_batch = {str(b): g for b, g in steps.groupby(steps["batch_id"].astype(str), sort=False)}
        for b in ids:
            a = self.assess(b, by_batch.get(b, empty))
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
        self.check_visible(who, batch_id)
        request_sha = hashlib.sha256(json.dumps(
            {"batch_id": batch_id, "decision": decision, "comment": comment, "plan": plan,
             "supersedes": supersedes}, sort_keys=True).encode()).hexdigest()
        if idempotency_key is not None:
            with self._db():
                first = self.store.idempotency_answer(token_id=who.token_id, key=idempotency_key)
            if first is not None:
                return self._replay(idempotency_key, request_sha, first)
        a = self.assess(batch_id)
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


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

from pydantic import AfterValidator, BaseModel, ConfigDict, Field  # noqa: E402 (the HTTP part only)


def _valid_id(value: str) -> str:
    reason = check_id(value)
    if reason is not None:
        raise ValueError(f"not an acceptable id: it {reason}")
    return value


def _valid_unit(value: str) -> str:
    return _valid_id(value) if value else value


def _valid_partner(value: str) -> str:
    return value if value == ALL_PARTNERS else _valid_id(value)


#: Batch, factory, partner and variable ids: the rule of :func:`recovery.data.ids.check_id`.
Id = Annotated[str, AfterValidator(_valid_id)]
#: Integers the store keeps as BIGINT.
Int64 = Annotated[int, Field(ge=INT64[0], le=INT64[1])]


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_id: Id | None = None
    bar_id: Int64 | None = None
    step: Int64
    factory: Id
    partner: Id
    variable: Id
    value: float | None = None
    unit: Annotated[str, Field(max_length=50), AfterValidator(_valid_unit)]
    kind: Literal["measurement", "lever", "context"]
    timestamp: datetime | None = None


class Steps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[Row] = Field(min_length=1, max_length=MAX_ROWS)


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["accept", "reject", "modify"]
    comment: str = Field(default="", max_length=4000)
    plan: dict[Id, float] | None = None
    supersedes: Int64 | None = Field(default=None, description="id of the final decision this one replaces")


class HandoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partner: Id
    comment: str = Field(default="", max_length=4000)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partner: Annotated[str, AfterValidator(_valid_partner)]
    role: Literal["partner", "engineer", "admin"]
    name: Id | None = None


class _BodyLimit:
    """ASGI middleware: refuse request bodies above ``limit`` bytes with 413,
    whether announced by Content-Length or streamed (chunked).

    The body is read whole (at most ``limit`` bytes) before the app sees the
    request: an error raised while the app reads it would reach FastAPI's body
    parser, which answers any such error with 400.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await _too_large(send, self.limit)
        chunks, seen, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":       # the client left: nothing to answer
                return
            body = msg.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                return await _too_large(send, self.limit)
            chunks.append(body)
            more = msg.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _too_large(send, limit):
    body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(store_url: str, model_dir: str | Path, *, data_dir: str | Path | None = None, seed: int = 0):
    """The FastAPI application (see the module docstring)."""
    from fastapi import Depends, FastAPI, Header, HTTPException, Path as PathParam, Query
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    from recovery.data.store import StoreError

    svc = Service(store_url, model_dir, data_dir=data_dir, seed=seed)
    app = FastAPI(title="recovery", version="1",
                  description="Recommendations for out-of-spec batches, engineers' decisions and their "
                              "audit trail. Authenticate with `Authorization: Bearer <token>` "
                              "(`recovery tokens create`).")
    app.state.service = svc

    @app.exception_handler(StoreError)
    def store_busy(request, exc):
        # the store is locked by a command (a long ingest) or unreachable: the client may retry
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    def principal(authorization: str | None = Header(default=None)) -> Principal:
        who = svc.authenticate(authorization)
        if who is None:
            raise HTTPException(401, "missing or invalid API token", headers={"WWW-Authenticate": "Bearer"})
        return who

    def guard(fn, *args):
        try:
            return fn(*args)
        except NotFound:
            raise HTTPException(404, f"no batch '{args[1]}'") from None
        except Refused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except BadRequest as exc:
            raise HTTPException(422, str(exc)) from None
        except Conflict as exc:
            return JSONResponse({"detail": str(exc), "current_decision_id": exc.current}, status_code=409)

    @app.get("/health", tags=["service"])
    def health():
        return {"status": "ok", "model_version": svc.model_version}

    @app.get("/api/model", tags=["service"])
    def model_info(who: Principal = Depends(principal)):
        return svc.info()

    @app.get("/api/batches", tags=["batches"])
    def list_batches(status: str | None = Query(default=None, description="one of " + ", ".join(STATUSES)),
                     who: Principal = Depends(principal)):
        if status is not None and status not in STATUSES:
            raise HTTPException(422, f"unknown status '{status}'; expected one of {', '.join(STATUSES)}")
        return svc.batches(who, status)

    @app.get("/api/batches/{batch_id}", tags=["batches"])
    def get_batch(batch_id: Id, who: Principal = Depends(principal)):
        return guard(svc.batch_view, who, batch_id)

    @app.get("/api/batches/{batch_id}/recommendation", tags=["batches"])
    def get_recommendation(batch_id: Id, who: Principal = Depends(principal)):
        return guard(svc.recommendation, who, batch_id)

    @app.post("/api/batches/{batch_id}/steps", tags=["batches"])
    def append_steps(batch_id: Id, body: Steps, who: Principal = Depends(principal)):
        """Append step rows. Only to batches your partner owns (or, for the partner of the
        first step, a new batch), and only rows of steps your partner runs."""
        res = guard(svc.append, who, batch_id, [r.model_dump() for r in body.rows])
        return res if isinstance(res, JSONResponse) else JSONResponse(res[1], status_code=res[0])

    @app.post("/api/batches/{batch_id}/handover", tags=["batches"], status_code=201)
    def post_handover(batch_id: Id, body: HandoverIn, who: Principal = Depends(principal)):
        """Hand a batch you own to another partner (engineer or admin); audited."""
        res = guard(svc.handover, who, batch_id, body.partner, body.comment)
        return res if isinstance(res, JSONResponse) else JSONResponse(res[1], status_code=res[0])

    @app.post("/api/batches/{batch_id}/decision", tags=["batches"], status_code=201)
    def post_decision(batch_id: Id, body: DecisionIn, who: Principal = Depends(principal),
                      idempotency_key: Id | None = Header(default=None, alias="Idempotency-Key")):
        """Record a decision. 409 when the batch has a final decision after this step, unless
        ``supersedes`` names it; an ``Idempotency-Key`` replay returns the first answer."""
        res = guard(lambda *a: svc.record_engineer_decision(*a, supersedes=body.supersedes, idempotency_key=idempotency_key),
                    who, batch_id, body.decision, body.comment, body.plan)
        return res if isinstance(res, JSONResponse) else JSONResponse(res[1], status_code=res[0])

    @app.get("/api/audit", tags=["audit"])
    def get_audit(batch_id: Id | None = None, who: Principal = Depends(principal)):
        return guard(svc.audit, who, batch_id)

    @app.get("/api/decisions/export", tags=["audit"])
    def export_decisions(who: Principal = Depends(principal)):
        return guard(svc.labelled_decisions, who)

    @app.get("/api/reports/health", tags=["reports"])
    def get_health_report(since: float | None = Query(default=None, description="first production day of "
                                                                                 "the change window"),
                          gate_level: float = Query(default=0.5, gt=0.0, lt=1.0),
                          who: Principal = Depends(principal)):
        return svc.health_report(who, since, gate_level)

    @app.get("/api/reports/track-record", tags=["reports"])
    def get_track_record(since: str | None = Query(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                                                   description="first day (YYYY-MM-DD, UTC)"),
                         who: Principal = Depends(principal)):
        return svc.track_record(who, since)

    @app.post("/api/tokens", tags=["tokens"], status_code=201)
    def post_token(body: TokenIn, who: Principal = Depends(principal)):
        try:
            return guard(svc.new_token, who, body.partner, body.role, body.name)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.delete("/api/tokens/{token_id}", tags=["tokens"])
    def delete_token(token_id: int = PathParam(ge=0, le=INT64[1]), who: Principal = Depends(principal)):
        if not guard(svc.revoke_token, who, token_id):
            raise HTTPException(404, f"no live token {token_id}")
        return {"revoked": token_id}

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/plant", include_in_schema=False)
    def plant():
        return FileResponse(STATIC / "plant.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    return app
