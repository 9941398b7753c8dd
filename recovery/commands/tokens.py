"""``recovery tokens``: create, revoke and list the service's API tokens."""

from __future__ import annotations

import argparse

from recovery.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokens", help="manage API tokens of the service",
        description="API tokens for 'recovery serve'. A token belongs to one partner and has a role: "
                    "partner (see and append its batches), engineer (also decide), admin (every "
                    "partner, and manage tokens; partner '*'). The store keeps only a hash: the "
                    "token is printed once, at creation.")
    p.add_argument("--store", default=None, help="store URL (default: $RECOVERY_STORE or the user data folder)")
    tsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = tsub.add_parser("create", help="create a token and print it once")
    c.add_argument("--partner", required=True,
                   help="partner id, or '*' for an admin over all partners; it must be known: a partner "
                        "of a process stored in the store (ingesting data stores it) or of --process, "
                        "or one whose data (by a mapping) is in the store")
    c.add_argument("--process", help="also accept the partners of this process (built-in name or TOML "
                                     "file), for a store that holds no data yet")
    c.add_argument("--role", required=True, choices=["partner", "engineer", "admin"])
    c.add_argument("--name", help="who holds it (shown in the audit trail)")
    c.add_argument("--store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    r = tsub.add_parser("revoke", help="revoke a token by id")
    r.add_argument("token_id", type=int)
    r.add_argument("--store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ls = tsub.add_parser("list", help="list tokens (ids, partners, roles; never the tokens)")
    ls.add_argument("--store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from recovery.data.store import StoreError, default_url, open_store
    from recovery.service.auth import create_token

    from recovery.commands._common import load_process_arg
    from recovery.data.ids import check_id

    if args.action == "create":
        # checked before the store is opened: a wrong name costs no wait for the store's lock
        for flag, value in (("--partner", args.partner if args.partner != "*" else None),
                            ("--name", args.name)):
            reason = check_id(value) if value is not None else None
            if reason:
                raise UserError(f"{flag}: not an acceptable id: it {reason}")
        extra = load_process_arg(args.process) if args.process else None
    try:
        store = open_store(args.store or default_url())
    except StoreError as exc:
        raise UserError(str(exc)) from None
    with store:
        if args.action == "create":
            known = store.known_partners()
            if extra is not None:
                for pt in extra.partners:
                    known.setdefault(pt.id, f"process '{extra.name}'")
            if args.partner != "*" and args.partner not in known:
                listed = ", ".join(f"{p} ({w})" for p, w in sorted(known.items())) or "none"
                raise UserError(f"unknown partner '{args.partner}': no process or ingested data in store "
                                f"{store.name} knows it (known: {listed}); check the spelling, ingest its "
                                f"data first, or name its process with --process")
            try:
                tid, token = create_token(store, partner=args.partner, role=args.role, name=args.name)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            store.add_audit(actor="cli", action="token_created",
                            payload={"token_id": tid, "partner": args.partner, "role": args.role})
            print(f"token {tid} for partner {args.partner}, role {args.role} (shown once; keep it safe):")
            print(token)
        elif args.action == "revoke":
            if not store.revoke_token(args.token_id):
                raise UserError(f"no live token with id {args.token_id}")
            store.add_audit(actor="cli", action="token_revoked", payload={"token_id": args.token_id})
            print(f"token {args.token_id} revoked")
        else:
            df = store.tokens()
            if not len(df):
                print("no tokens")
            for r in df.itertuples():
                state = "live" if pd.isna(r.revoked_at) else "revoked"
                print(f"{r.id:6d}  {r.partner:8s} {r.role:9s} {state:8s} {r.name or ''}")
    return 0
