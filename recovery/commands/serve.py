"""``recovery serve``: the engineers' HTTP service and web page.

Workers: a DuckDB store admits one process per file, so with DuckDB the
service is one process whose request threads each read through a cursor of
their own (writes take turns inside the process). With PostgreSQL,
``--workers N`` runs N uvicorn worker processes on one port; each has a pool
of connections, and all share the recommendation cache kept in the store.
"""

from __future__ import annotations

import argparse
import json
import os

from recovery.cli import UserError

#: How ``recovery serve --workers N`` hands its options to the worker processes.
WORKER_ENV = "RECOVERY_SERVE_WORKER"


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
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (default 1). More than one needs a PostgreSQL store: a DuckDB "
                        "file admits one process, which serves its requests on threads")
    p.set_defaults(func=run)


def check_workers(workers: int, url: str) -> None:
    """Refuse a worker count the store cannot serve, saying why and what to do instead."""
    if workers < 1:
        raise UserError(f"--workers {workers}: at least 1")
    if workers > 1 and not url.startswith(("postgresql://", "postgres://")):
        raise UserError(f"--workers {workers}: a DuckDB store admits one process at a time, so the service "
                        "runs as one process whose request threads share the store (each reads through "
                        "its own cursor); use --workers 1, or a PostgreSQL store (--store "
                        "postgresql://...) for several workers")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from recovery.data.store import StoreError, default_url, shown_path
    from recovery.service.app import create_app

    url = args.store or default_url()
    check_workers(args.workers, url)
    try:
        app = create_app(url, args.model, data_dir=args.data_dir, seed=args.seed)
    except FileNotFoundError as exc:
        # the file's name, not the server's absolute path
        raise UserError(f"--model {shown_path(args.model)}: no such file "
                        f"'{shown_path(exc.filename) if exc.filename else ''}'") from None
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    svc = app.state.service
    print(f"serving '{svc.process.name}' with model {svc.model_version} from {svc.store.location} "
          f"on http://{args.host}:{args.port}/ with {args.workers} worker(s) (API docs at /docs)")
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    # The app above only checked the options; each worker builds its own (its own pool).
    svc.store.close()
    os.environ[WORKER_ENV] = json.dumps({"store": url, "model": str(args.model), "data_dir": args.data_dir,
                                         "seed": args.seed})
    uvicorn.run("recovery.commands.serve:worker_app", factory=True, workers=args.workers,
                host=args.host, port=args.port, log_level="warning")
    return 0


def worker_app():
    """The app of one worker process of ``recovery serve --workers N`` (uvicorn calls it)."""
    from recovery.service.app import create_app

    opts = json.loads(os.environ[WORKER_ENV])
    return create_app(opts["store"], opts["model"], data_dir=opts["data_dir"], seed=opts["seed"])
