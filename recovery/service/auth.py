"""API tokens and roles for the service.

A token is a random string shown once when it is created; the store keeps only
its SHA-256. Roles:

- ``partner``: reads and appends step data of the batches its partner owns
  (see :mod:`recovery.service.app` for the ownership rule);
- ``engineer``: as ``partner``, and records decisions on recommendations and
  hands its batches over to other partners;
- ``admin``: owns every batch, records decisions, manages tokens.

A token belongs to one partner (``*`` for an admin that spans all of them).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

__all__ = ["ROLES", "Principal", "hash_token", "create_token", "authenticate", "may_write", "refused_row"]

ROLES = ("partner", "engineer", "admin")
ALL_PARTNERS = "*"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, partner and role."""

    token_id: int
    partner: str
    role: str
    name: str | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}" + (f" ({self.name})" if self.name else "")

    @property
    def all_partners(self) -> bool:
        return self.role == "admin" or self.partner == ALL_PARTNERS

    @property
    def can_decide(self) -> bool:
        return self.role in ("engineer", "admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store, *, partner: str, role: str, name: str | None = None,
                 partners: tuple[str, ...] | None = None) -> tuple[int, str]:
    """Create a token; returns ``(token_id, token)``. The token is not stored, only its hash.

    Raises
    ------
    ValueError
        Unknown role, or a partner not in ``partners`` (when given).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}'; expected one of {', '.join(ROLES)}")
    if partner == ALL_PARTNERS and role != "admin":
        raise ValueError("only an admin token may span all partners ('*')")
    if partners is not None and partner != ALL_PARTNERS and partner not in partners:
        raise ValueError(f"unknown partner '{partner}'; the process has {', '.join(partners)}")
    token = "rcv_" + secrets.token_urlsafe(32)
    tid = store.add_token(token_hash=hash_token(token), partner=partner, role=role, name=name)
    return tid, token


def authenticate(store, header: str | None) -> Principal | None:
    """The principal of an ``Authorization: Bearer <token>`` header, or None."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer "):].strip()
    if not token or len(token) > 200:
        return None
    # The lookup is by the hash (an index probe, constant in the token), so the
    # comparison leaks nothing about stored tokens through timing.
    row = store.token(hash_token(token))
    if row is None:
        return None
    tid, partner, role, name = row
    return Principal(int(tid), partner, role, name)


def may_write(who: Principal, owners: set[str], first_partner: str) -> bool:
    """The ownership rule for writes to a batch.

    The caller's partner must own the batch (step data in it, or handed to
    it), or the batch must not exist yet (no owners) and the caller's partner
    run the first step, where batch ids are born. A partner at a later step
    gets a batch by hand-over, so nobody can claim another partner's batch, or
    a batch id before its real owner uses it, by writing to it. An admin may
    write to every batch.

    Parameters
    ----------
    who : Principal
    owners : set of str
        The batch's owners (partners with step data in it, and those it was handed to).
    first_partner : str
        The partner that runs the process's first step.
    """
    if who.all_partners:
        return True
    if owners:
        return who.partner in owners
    return who.partner == first_partner


def refused_row(who: Principal, row: dict, step_partner: dict[int, str]) -> str | None:
    """Why ``who`` may not send this step row (None: it may).

    A partner sends rows in its own name only, and only of the steps it runs
    (``step_partner`` maps a step to its partner); an admin sends any row.
    """
    if who.all_partners:
        return None
    if row.get("partner") != who.partner:
        return f"partner '{row.get('partner')}' is not your partner ('{who.partner}')"
    st = row.get("step")
    if step_partner.get(st, who.partner) != who.partner:
        return f"step {st} is run by partner '{step_partner[st]}', not by you"
    return None
