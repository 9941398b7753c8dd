"""``recovery ingest``: validate a partner's file (or a folder of Parquet parts), store
accepted rows, quarantine the rest, and leave an audit entry per stored file."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from recovery.cli import UserError
from recovery.commands._common import positive_int


EXIT_STATUSES = """\
exit status:
  0  every row accepted (or already stored: duplicates)
  1  some rows rejected and written to the quarantine file (0 with --allow-rejects)
  2  the file, a part of the folder, the mapping or the store cannot be used
     (in a folder, the other parts are still stored)
  3  internal error: a bug; one line is printed, --debug or RECOVERY_DEBUG=1
     prints the traceback
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="validate a data file (or folder of parts) and store it (rejects go to quarantine)",
        description="Validate every row of FILE against the step-data schema and the process, "
                    "store the accepted rows with their provenance, write rejected rows with "
                    "their reasons to a quarantine CSV, and print a summary. FILE may be a folder "
                    "of Parquet part files (as 'recovery simulate --out FOLDER' writes): each part "
                    "is ingested as its own source file, in name order. Quarantine cells that a "
                    "spreadsheet would run as a formula (starting with = + - @) get a leading '.",
        epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="CSV or Parquet file, or a folder of Parquet parts")
    p.add_argument("--mapping", help="the partner's mapping (TOML; see docs/partner-data.md); "
                                     "not needed for files already in the step-data schema")
    p.add_argument("--process", default=None,
                   help="process of a schema file without mapping: 'default' (the default), "
                        "'small' or a path; a mapping names its own")
    p.add_argument("--store", default=None,
                   help="store URL: duckdb:///path/file.duckdb or postgresql://user:pass@host/db "
                        "(default: $RECOVERY_STORE, else a DuckDB file in the user data directory)")
    p.add_argument("--quarantine", default=None,
                   help="quarantine CSV to write; for a folder FILE, a directory that gets "
                        "PART.quarantine.csv per part with rejects (default: under the user data "
                        "directory, or $RECOVERY_QUARANTINE_DIR)")
    p.add_argument("--allow-rejects", action="store_true",
                   help="exit 0 even when rows were rejected")
    p.add_argument("--chunk-rows", type=positive_int, default=100_000,
                   help="source rows per chunk (default 100000)")
    p.add_argument("--json", action="store_true",
                   help='print {"accepted", "rejected", "duplicates", "quarantine", "reasons"}; for a '
                        'folder, "quarantine" is a list, each reason has a "file" and "files" holds '
                        'one object per part')
    p.add_argument("--by", metavar="NAME", default=None,
                   help="who ingests, for the audit trail (default: the login name); each stored "
                        "file gets an 'append' audit entry by cli:NAME")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true",
                   help="on an internal error (exit 3), print the full traceback")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.mapping and args.process:
        raise UserError("--process is for schema files; a mapping names its own process")
    try:
        return _run(args)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes exit 3, not a traceback
        if args.debug or os.environ.get("RECOVERY_DEBUG"):
            traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"recovery ingest: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(at {Path(where.filename).name}:{where.lineno}; the file being ingested was rolled "
              f"back; please report it, with --debug for the traceback)", file=sys.stderr)
        return 3


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "..."


def _run(args: argparse.Namespace) -> int:
    import getpass

    from recovery.data.ingest import IngestError, ingest, ingest_folder
    from recovery.data.mapping import MappingError
    from recovery.data.store import StoreError, open_store
    from recovery.decisions import record_ingest
    from simulators.definition import ProcessDefinitionError

    actor = f"cli:{args.by or getpass.getuser()}"
    folder = Path(args.file).is_dir()
    engine = ingest_folder if folder else ingest
    try:
        with open_store(args.store) as store:
            res = engine(args.file, store=store, mapping=args.mapping, process=args.process,
                         quarantine=args.quarantine, chunk_rows=args.chunk_rows,
                         progress=not args.quiet and not args.json)
            where = store.location
            # One audit entry per stored file, as the service leaves for each append; each
            # ingest has committed already, so the entries go in one transaction of their own.
            with store.transaction():
                for r in (res.results if folder else [res]):
                    record_ingest(store, r, actor=actor)
    except (IngestError, MappingError, StoreError, ProcessDefinitionError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # unreadable file, quarantine folder not writable, disk full
        raise UserError(f"{exc.filename or args.file}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(res.to_json(), indent=1))
    elif folder:
        _print_folder(res, where)
    else:
        _print_file(res, where)
    if folder and res.errors:
        for _, msg in res.errors:
            print(f"recovery ingest: error: {msg}", file=sys.stderr)
        return 2
    if res.rejected and not args.allow_rejects:
        if not args.json:
            print(f"recovery ingest: {res.rejected} row(s) rejected (see the quarantine file); "
                  f"--allow-rejects to exit 0", file=sys.stderr)
        return 1
    return 0


def _print_file(res, where: str) -> None:
    print(f"file         {res.source}")
    print(f"process      {res.process}")
    print(f"store        {where} (ingest {res.ingest_id})")
    _print_counts(res)
    if res.rejected:
        print(f"quarantine   {res.quarantine}")
        print("first reasons:")
        for r in res.reasons[:10]:
            print(f"  row {r.row:>7}  {r.column}: {r.reason}")


def _print_folder(res, where: str) -> None:
    print(f"folder       {res.source} ({len(res.parts)} part files)")
    print(f"store        {where}")
    done = {r.source: r for r in res.results}
    failed = dict(res.errors)
    for part in res.parts:
        r = done.get(part)
        if r is None:
            print(f"  {part.name:24s} not ingested: {failed[part]}")
            continue
        line = (f"  {part.name:24s} rows {r.rows:>8}  accepted {r.accepted:>8}  "
                f"duplicates {r.duplicates:>8}  rejected {r.rejected:>6}  (ingest {r.ingest_id})")
        print(line + (f"  quarantine {r.quarantine}" if r.quarantine else ""))
    print("total")
    _print_counts(res)
    if res.errors:
        print(f"unreadable   {len(res.errors)} part file(s), nothing of them stored")
    if res.rejected:
        print("first reasons:")
        for f, r in res.reasons()[:10]:
            print(f"  {f.name} row {r.row:>7}  {r.column}: {r.reason}")


def _print_counts(res) -> None:
    print(f"rows         {res.rows}")
    print(f"accepted     {res.accepted}  ({res.stored} observations stored)")
    print(f"duplicates   {res.duplicates}  (already stored, not stored twice)")
    print(f"rejected     {res.rejected}")
