"""The ``recovery`` command: a thin shell over the library.

Each subcommand lives in ``recovery/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
function ``(args) -> int`` (the exit status). Commands parse, call the
library and format; they hold no domain logic.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

# Parallelism is ours to place (sampler chains, Dask workers, one batch per core);
# BLAS thread pools on top of it oversubscribe the cores and spin. Before numpy
# is imported; a value the user sets wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# ArviZ announces its coming refactor on import, in every command that fits or loads
# a model; it concerns ArviZ's API, not the user's run.
warnings.filterwarnings("ignore", message="\nArviZ is undergoing a major refactor", category=FutureWarning)

# Order is the order of ``recovery --help``.
COMMANDS = ["simulate", "ingest", "quality", "learn-graph", "fit", "calibrate", "diagnose", "recommend", "measure", "train-rl",
            "evaluate", "sensors", "tune",
            "serve", "tokens", "health", "track-record"]


from recovery.errors import UserError  # noqa: E402  (re-exported: the commands import it from here)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recovery",
        description="Save out-of-spec batches: simulate, fit, diagnose, recommend, evaluate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"recovery.commands.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"recovery {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
