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

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from recovery.data.ids import check_id
from recovery.service.auth import ALL_PARTNERS, Principal
from recovery.service.core import (INT64, MAX_BODY_BYTES, MAX_ROWS, STATIC, STATUSES, BadRequest, Conflict,
                                   NotFound, Refused, Service)

__all__ = ["Service", "create_app", "MAX_BODY_BYTES", "STATUSES"]


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


def _guard(fn, *args):
    """``fn(*args)``, with the service's refusals as HTTP answers (``args[1]`` is the batch id)."""
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse

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


def _encoded(content) -> bytes:
    """``content`` as the bytes FastAPI sends when an endpoint returns it (its JSON
    encoder, then its default response class)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    return JSONResponse(jsonable_encoder(content)).body


def create_app(store_url: str, model_dir: str | Path, *, data_dir: str | Path | None = None, seed: int = 0):
    """The FastAPI application (see the module docstring)."""
    from fastapi import Depends, FastAPI, Header, HTTPException, Path as PathParam, Query
    from fastapi.responses import JSONResponse, Response

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

    guard = _guard

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
        # the body FastAPI would send for svc.batch_view, encoded once per batch and data version
        return guard(lambda *a: Response(svc.batch_view_encoded(*a, _encoded), media_type="application/json"),
                     who, batch_id)

    @app.get("/api/batches/{batch_id}/recommendation", tags=["batches"])
    def get_recommendation(batch_id: Id, who: Principal = Depends(principal)):
        return guard(svc.recommendation, who, batch_id)

    @app.get("/api/batches/{batch_id}/measure", tags=["batches"])
    def get_measure(batch_id: Id, top: int = Query(default=3, ge=1, le=200), who: Principal = Depends(principal)):
        return guard(svc.measurement, who, batch_id, top)

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

    _add_pages(app)
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    return app


def _add_pages(app) -> None:
    """The browser pages (the batch page at ``/``, the plant page at ``/plant``) and their
    static files, outside the API schema."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/plant", include_in_schema=False)
    def plant():
        return FileResponse(STATIC / "plant.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
