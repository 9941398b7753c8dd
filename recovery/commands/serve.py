"""``recovery serve``: the engineers' HTTP service and web page."""

from __future__ import annotations

import argparse

from recovery.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the HTTP service and web page for engineers",
        description="Serve batches, recommendations and decisions over HTTP (OpenAPI at /docs), "
                    "with the engineers' web page at /. Every /api request needs an API token "
                    "('recovery tokens create'); decisions and shown recommendations go to the "
                    "store's audit trail.")
    p.add_argument("--store", default=None,
                   help="store URL: duckdb:///path/file.duckdb or postgresql://user:pass@host/db "
                        "(default: $RECOVERY_STORE or a DuckDB file in the user data folder)")
    p.add_argument("--model", required=True, help="fitted causal model directory (recovery fit)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data-dir", help="where received payloads and quarantine files are kept "
                                      "(default: the user data folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of every recommendation (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from recovery.data.store import StoreError, default_url, shown_path
    from recovery.service.app import create_app

    try:
        app = create_app(args.store or default_url(), args.model, data_dir=args.data_dir, seed=args.seed)
    except FileNotFoundError as exc:
        # the file's name, not the server's absolute path
        raise UserError(f"--model {shown_path(args.model)}: no such file "
                        f"'{shown_path(exc.filename) if exc.filename else ''}'") from None
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    svc = app.state.service
    print(f"serving '{svc.process.name}' with model {svc.model_version} from {svc.store.location} "
          f"on http://{args.host}:{args.port}/ (API docs at /docs)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
