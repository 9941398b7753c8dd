"""Engineers' decisions on a recommendation: the plan each one fixes, and recording it.

The HTTP service (``POST /api/batches/{id}/decision``) and the CLI
(``recovery recommend --decide``) both go through here, so a decision means
the same and leaves the same store rows and audit entries wherever it was made.

Rule of final decisions: one decision per batch and recommendation step is
final; another one is refused (:class:`DecisionConflict`) unless it names the
current final one as the one it supersedes, which is audited.

Data coming in is audited here too: :func:`record_ingest` writes the entry
``recovery ingest`` leaves for each file it stores (the service's
``POST /api/batches/{id}/steps`` writes the same ``append`` entry type).

Layer: with :mod:`recovery.recommend` (reads its recommendations; writes
through :mod:`recovery.data.store`; the plan rules are
:func:`recovery.agents.base.check_plan`).
"""

from __future__ import annotations

import hashlib
import math
from typing import Mapping

import pandas as pd

from recovery.agents.base import PlanError, check_plan

__all__ = ["DECISIONS", "DecisionError", "DecisionConflict", "decided_plan", "input_hash", "record_decision",
           "record_ingest"]

#: What an engineer can decide on a recommendation.
DECISIONS = ("accept", "reject", "modify")


class DecisionError(ValueError):
    """The decision cannot be accepted as asked (its plan, or a decision other than accept, reject or modify); the message says why."""


class DecisionConflict(Exception):
    """Another decision is final for the batch after this step.

    Attributes
    ----------
    batch_id : str
    after_step : int
    current : int
        Id of the current final decision; -1 when there is none (``supersedes``
        named a decision where none is final).
    supersedes : int or None
        What the refused decision claimed to supersede.
    """

    def __init__(self, batch_id: str, after_step: int, current: int, supersedes: int | None):
        super().__init__(f"batch {batch_id} after step {after_step}: final decision is {current}, "
                         f"supersedes={supersedes}")
        self.batch_id, self.after_step, self.current, self.supersedes = batch_id, after_step, current, supersedes


def input_hash(history: pd.DataFrame, model_version: str, seed: int, physics: str | None = None) -> str:
    """SHA-256 (hex) of what a recommendation depends on: the model, the calibrated physics the
    plans use, the seed and the batch's rows.

    The audit trail stores it with every recommendation shown and every
    decision, so a decision can be traced to the exact inputs it was made on.

    Parameters
    ----------
    history : DataFrame
        The batch's step data (schema of :mod:`simulators.schema`).
    model_version : str
    seed : int
        The recommendation's seed.
    physics : str, optional
        :attr:`recovery.calibration.PhysicsPosterior.fingerprint` when the plans use a
        calibration (a model folder with and without one plans differently from the same
        rows); None for the file's physics, which keeps the hash of a plain model unchanged.
    """
    h = hashlib.sha256()
    h.update(f"{model_version}|{seed}|{len(history)}|".encode())
    if physics is not None:
        h.update(f"physics:{physics}|".encode())
    cols = ["batch_id", "bar_id", "step", "variable", "value", "kind"]
    h.update(pd.util.hash_pandas_object(history[cols], index=False).to_numpy().tobytes())
    return h.hexdigest()


def decided_plan(process, rec, decision: str, plan: Mapping[str, float] | None) -> dict[str, float] | None:
    """The levers a decision fixes.

    Parameters
    ----------
    process : Process
    rec : Recommendation
        The recommendation decided on (its ``step`` and ``plan`` rows).
    decision : {"accept", "reject", "modify"}
    plan : mapping lever name -> value (lever's unit), optional
        Only with ``modify``: the levers the engineer changes; the others keep
        the recommended value.

    Returns
    -------
    dict or None
        ``accept``: the recommended plan; ``modify``: every lever after
        ``rec.step`` with the engineer's changes; ``reject``: None.

    Raises
    ------
    DecisionError
        Unknown decision or lever, a plan without ``modify`` or ``modify``
        without one, a value that is not a number, a lever already past, or one
        outside its bounds (the plan rules of :func:`check_plan`).
    """
    if decision not in DECISIONS:
        raise DecisionError(f"unknown decision '{decision}'; expected one of {', '.join(DECISIONS)}")
    p = process
    if decision != "modify":
        if plan:
            raise DecisionError(f"a plan goes only with 'modify', not with '{decision}'")
        return {r["lever"]: r["value"] for r in rec.plan} if decision == "accept" else None
    if not plan:
        raise DecisionError("a 'modify' decision needs the plan: {lever: value}")
    recommended = p.nominal_plan()
    for r in rec.plan:
        recommended[p.lever_index[r["lever"]]] = r["value"]
    full = recommended.copy()
    free = p.free_levers(rec.step)
    for name, v in plan.items():
        if name not in p.lever_index:
            raise DecisionError(f"unknown lever '{name}'")
        j = p.lever_index[name]
        if not free[j]:
            raise DecisionError(f"lever '{name}' (step {p.levers[j].step}) is already past: the batch is "
                                f"after step {rec.step}")
        if not math.isfinite(v):
            raise DecisionError(f"lever '{name}': value {v} is not a number")
        full[j] = float(v)
    try:
        check_plan(p, full, rec.step, recommended)
    except PlanError as exc:
        raise DecisionError(f"the plan {exc}") from None
    return {lv.name: float(full[j]) for j, lv in enumerate(p.levers) if free[j]}


def record_decision(store, *, process, batch_id: str, rec, decision: str, comment: str,
                    plan: dict[str, float] | None, actor: str, partner: str | None, role: str | None,
                    model_version: str | None, input_hash: str | None,
                    supersedes: int | None = None) -> dict:
    """Store a decision and its audit entries; call inside ``store.transaction()``.

    Parameters
    ----------
    store : Store
    process : Process
    batch_id : str
    rec : Recommendation
        The recommendation decided on.
    decision : {"accept", "reject", "modify"}
    comment : str
    plan : dict or None
        The levers the decision fixes (:func:`decided_plan`).
    actor, partner, role : str
        Who decided, for the decision row and the audit trail.
    model_version, input_hash : str
        The model and the inputs behind the recommendation.
    supersedes : int, optional
        Id of the current final decision this one replaces.

    Returns
    -------
    dict
        ``decision_id``, ``audit_id``, ``batch_id``, ``decision``, ``plan``,
        ``after_step``, ``supersedes``, ``input_hash``, ``model_version``.

    Raises
    ------
    DecisionConflict
        Another decision is final after ``rec.step`` and ``supersedes`` does
        not name it (nothing is stored).
    """
    st = store
    did = st.next_id()
    current = st.claim_decision(process=process.name, batch_id=batch_id, after_step=rec.step,
                                decision_id=did, supersedes=supersedes)
    if current is not None:
        raise DecisionConflict(batch_id, rec.step, current, supersedes)
    st.add_decision(batch_id=batch_id, engineer=actor, decision=decision, plan=plan, comment=comment,
                    partner=partner, decision_id=did)
    aid = st.add_audit(
        actor=actor, partner=partner, role=role, action="decision", batch_id=batch_id,
        model_version=model_version, input_hash=input_hash,
        payload={"decision": decision, "comment": comment, "plan": plan, "decision_id": did,
                 "after_step": rec.step, "supersedes": supersedes,
                 "recommended": rec.decision, "recommended_plan": rec.plan})
    if supersedes is not None:
        st.add_audit(actor=actor, partner=partner, role=role, action="decision_superseded",
                     batch_id=batch_id, model_version=model_version, input_hash=input_hash,
                     payload={"decision_id": supersedes, "superseded_by": did,
                              "after_step": rec.step, "comment": comment})
    return {"decision_id": did, "audit_id": aid, "batch_id": batch_id, "decision": decision, "plan": plan,
            "after_step": rec.step, "supersedes": supersedes, "input_hash": input_hash,
            "model_version": model_version}


def record_ingest(store, res, *, actor: str, role: str | None = "cli") -> int:
    """Write the audit entry of one ingested file (after its ingest has committed).

    The entry has the service's ``append`` type, so the trail shows data that
    came in through the CLI next to data that came through the service.

    Parameters
    ----------
    store : Store
        The store ``res`` was ingested into.
    res : recovery.data.ingest.IngestResult
        What the ingest of one file did.
    actor : str
        Who ingested it (the CLI gives ``cli:<login or --by>``).
    role : str, optional

    Returns
    -------
    int
        The audit entry's id.

    Notes
    -----
    The entry's ``partner`` is the partner whose data the file holds (the
    mapping's, or the one partner its rows name; None when they name several,
    all listed in ``payload["partners"]``). ``batch_id`` is set when the file
    touched one batch; ``payload["batches"]`` lists every batch it stored rows
    of. ``input_hash`` is the file's SHA-256, as the service records it.
    """
    ing = store.ingests()
    row = ing[ing["id"] == res.ingest_id].iloc[0]
    # which batches and partners this ingest stored rows of: provenance the store keeps per row
    touched = store.ingest_batches(res.ingest_id)
    batches = sorted({str(b) for b, _ in touched})
    partners = sorted({str(p) for _, p in touched})
    partner = row["partner"] if isinstance(row["partner"], str) else (partners[0] if len(partners) == 1 else None)
    return store.add_audit(
        actor=actor, partner=partner, role=role, action="append",
        batch_id=batches[0] if len(batches) == 1 else None, input_hash=str(row["source_sha256"]),
        payload={"file": str(res.source), "rows": res.rows, "accepted": res.accepted,
                 "rejected": res.rejected, "duplicates": res.duplicates, "ingest_id": int(res.ingest_id),
                 "process": res.process, "batches": batches, "partners": partners,
                 "quarantine": str(res.quarantine) if res.quarantine else None})
