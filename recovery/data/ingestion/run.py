"""The ingest itself: one file (or a folder of parts) -> the store, rejects -> quarantine.

See :mod:`recovery.data.ingest` for the contract (row numbers, counting,
quarantine, ranges). :func:`ingest` resolves a plan and the checks once per
file, then runs every chunk through the stages of :mod:`.columns` inside one
store transaction.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from recovery.data.ingestion.candidates import CandidatePlan, make_plan
from recovery.data.ingestion.checks import Check, contract, failures, row_checks, store_checks
from recovery.data.ingestion.judging import look_up, settle
from recovery.data.ingestion.parsing import parse_candidates
from recovery.data.ingestion.quarantine import QuarantineWriter, partial_path, remove_stale_partials
from recovery.data.ingestion.reading import CsvReader, RawChunk, open_reader
from recovery.data.ingestion.results import (MAX_REASONS, FolderIngestResult, IngestError, IngestResult,
                                             Reason, default_quarantine_dir)
from recovery.data.mapping import PartnerMapping, load_mapping
from recovery.data.store import IngestRecord, Store
from simulators.definition import Process, load_process

__all__ = ["ingest", "ingest_folder", "FUTURE_SLACK"]

#: Timestamps later than the ingestion time plus this are rejected as in the future.
FUTURE_SLACK = timedelta(days=1)


@dataclass(frozen=True)
class _Rules:
    """A file's plan with its row and store checks and their pandera schemas."""

    plan: CandidatePlan
    row: list[Check]
    store: list[Check]
    row_schema: object
    store_schema: object

    @classmethod
    def of(cls, plan: CandidatePlan, now: pd.Timestamp) -> _Rules:
        row, store = row_checks(plan, now), store_checks(plan)
        return cls(plan, row, store, contract(row), contract(store))


@dataclass
class _Tally:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    stored: int = 0
    reasons: list = field(default_factory=list)
    seen: dict = field(default_factory=dict)   # (step, variable, kind) -> (source col, source unit, unit)
    specified: dict = field(default_factory=dict)

    def variables(self, iid: int, process: str) -> pd.DataFrame:
        rows = [(iid, process, s, v, k, col, su, u, self.specified.get((s, v, k), True))
                for (s, v, k), (col, su, u) in sorted(self.seen.items())]
        return pd.DataFrame(rows, columns=["ingest_id", "process", "step", "variable", "kind",
                                           "source_column", "source_unit", "unit", "specified"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source(source: str | Path) -> tuple[Path, Path, int]:
    """(path as given, real path, size in bytes) of a file that can be ingested."""
    # messages name the file as the user gave it; the store records where it really is
    path = Path(source)
    if path.is_symlink() and not path.exists():
        raise IngestError(f"{path}: is a symbolic link to a missing file ({os.readlink(path)})")
    real = path.resolve()
    if path.is_dir():
        raise IngestError(f"{path}: is a folder (ingest_folder reads a folder of Parquet parts)")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise IngestError(f"{path}: the file is empty")
    return path, real, size


def ingest(source: str | Path, *, store: Store, mapping: str | Path | PartnerMapping | None = None,
           process: str | Path | Process | None = None, quarantine: str | Path | None = None,
           chunk_rows: int = 100_000, progress: bool = False,
           now: datetime | None = None) -> IngestResult:
    """Validate a file and store its accepted rows; write rejects to a quarantine file.

    Parameters
    ----------
    source : str or Path
        CSV or Parquet file.
    store : Store
        Where accepted rows go (see :func:`recovery.data.store.open_store`).
    mapping : str, Path or PartnerMapping, optional
        The partner's mapping. Without one, the file must already be in the
        step-data schema (as the simulator writes it).
    process : str, Path or Process, optional
        Process of a schema file (``default``, ``small`` or a path; default
        ``default``). A mapping names its own process.
    quarantine : str or Path, optional
        The quarantine CSV to write. Default: a file named after the source in
        :func:`default_quarantine_dir`.
    chunk_rows : int
        Source rows per chunk (memory grows with it, not with the file).
    progress : bool
        Show a progress bar on stderr.
    now : datetime, optional
        Ingestion time (UTC); timestamps after it plus a day are rejected.

    Returns
    -------
    IngestResult

    Raises
    ------
    IngestError
        The file cannot be read at all; the store is unchanged.
    recovery.data.mapping.MappingError
        The mapping is malformed or does not fit its process.

    Examples
    --------
    >>> from recovery.data.store import open_store
    >>> with open_store("duckdb://:memory:") as st:             # doctest: +SKIP
    ...     r = ingest("history.parquet", store=st, process="small")
    ...     r.accepted == r.rows
    True
    """
    from tqdm import tqdm

    m = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping
    path, real, size = _source(source)
    if m is not None:
        proc = m.process
    elif isinstance(process, Process):
        proc = process
    else:
        proc = load_process(process)
    reader = open_reader(path, m)
    plan = make_plan(proc, m, reader.layout)
    started = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    rules = _Rules.of(plan, pd.Timestamp(started + FUTURE_SLACK))
    sha = _sha256(path)
    qpath = Path(quarantine) if quarantine else (
        default_quarantine_dir() / f"{path.stem}.{started:%Y%m%dT%H%M%S}.{sha[:8]}.quarantine.csv")
    qpath.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(qpath.parent)
    record = IngestRecord(
        process=proc.name, process_digest=proc.digest, source_path=str(real),
        source_sha256=sha, source_bytes=size, mapping_path=str(m.path) if m else None,
        mapping_sha256=m.sha256 if m else None, partner=m.partner if m else None,
        ingested_at=started)
    bar = tqdm(total=reader.total, unit="B" if isinstance(reader, CsvReader) else "row",
               unit_scale=True, desc=f"ingest {path.name}", disable=None if progress else True,
               leave=False)
    try:
        tally, iid = _run(reader, rules, store, record, qpath, chunk_rows, bar.update, path)
    finally:
        bar.close()
    return IngestResult(source=path, process=proc.name, rows=tally.rows, accepted=tally.accepted,
                        rejected=tally.rejected, duplicates=tally.duplicates, stored=tally.stored,
                        quarantine=qpath.resolve() if tally.rejected else None,
                        reasons=tuple(tally.reasons), ingest_id=iid)


def _run(reader, rules: _Rules, store: Store, record: IngestRecord, qpath: Path, chunk_rows: int,
         progress, path: Path) -> tuple[_Tally, int]:
    """Every chunk in one store transaction; the quarantine file renamed into place before it commits."""
    proc = rules.plan.process
    qtmp = partial_path(qpath)
    tally = _Tally()
    renamed = False
    try:
        with store.transaction(), open(qtmp, "w", encoding="utf-8", newline="") as qf:
            store.register_process(proc)
            iid = store.add_ingest(record)
            qw = QuarantineWriter(qf)
            qw.writerow(["row", "column", "reason"] + reader.layout.labels)
            for chunk in reader.chunks(chunk_rows, progress):
                _chunk(chunk, rules, store, iid, tally, qw)
            if tally.rows == 0:
                raise IngestError(f"{path}: the file has no data rows")
            store.add_variables(tally.variables(iid, proc.name))
            store.finish_ingest(iid, source_rows=tally.rows, accepted=tally.accepted,
                                rejected=tally.rejected, duplicates=tally.duplicates)
            if tally.rejected:
                store.add_quarantine(iid, str(qpath.resolve()), tally.rejected)
                # renamed before the store commits: a crash in between leaves a quarantine
                # file of an ingest that never happened (re-run writes it again), never an
                # ingest whose rejected rows are nowhere
                qf.flush()
                os.fsync(qf.fileno())
                qf.close()
                os.replace(qtmp, qpath)
                renamed = True
    except BaseException:
        for f in (qtmp, qpath if renamed else None):
            if f is not None and f.exists():
                f.unlink()
        raise
    if qtmp.exists():
        qtmp.unlink()
    return tally, iid


def _chunk(ch: RawChunk, rules: _Rules, store: Store, iid: int, tally: _Tally, qw: QuarantineWriter) -> None:
    """One chunk: parse, row checks, judge against the store, store the accepted, quarantine the rest."""
    plan = rules.plan
    n_rows = len(ch.rows)
    c = parse_candidates(plan.build(ch), plan)
    c.index = pd.RangeIndex(len(c))
    f1 = failures(c, rules.row, rules.row_schema, plan.sources)
    # a copy of the widest frame only when some rows failed (clean files: none)
    d, keys = look_up(c[~c["_row"].isin(set(f1["row"].tolist()))] if len(f1) else c, plan, store, iid)
    del c  # a chunk's candidates are its largest frame: one copy alive at a time
    f2 = settle(d, keys, plan, rules.store, rules.store_schema, n_rows)

    # -- verdicts per source row: its first failure, in check order -------------
    f2["prio"] += len(rules.row)
    fails = pd.concat([f1, f2], ignore_index=True).sort_values(["row", "prio", "src"], kind="stable")
    first_fail = fails.drop_duplicates("row", keep="first")
    rejected = set(first_fail["row"].tolist())
    keep = d[~d["_row"].isin(rejected)] if rejected else d
    dup = keep.groupby("_row")["stored"].all()
    n_rej = len(rejected)
    n_dup = int(dup.sum())
    tally.rows += n_rows
    tally.rejected += n_rej
    tally.duplicates += n_dup
    tally.accepted += n_rows - n_rej - n_dup
    _store_accepted(keep, plan, store, iid, tally)
    if n_rej:
        _quarantine(ch, first_fail, qw, tally)


#: The candidate columns an observation is written from.
_WRITTEN = ["batch_id", "bar_id", "bar_key", "step", "factory", "partner", "variable", "value", "unit",
            "kind", "timestamp", "_row"]


def _store_accepted(keep: pd.DataFrame, plan: CandidatePlan, store: Store, iid: int, tally: _Tally) -> None:
    """Write the accepted candidates not stored yet, their genealogy links and the variables seen."""
    p = plan.process
    stored = keep["stored"].to_numpy(dtype=bool)
    # the columns written, before the rows: filtering the whole candidate frame copies ~70 columns
    new = keep[_WRITTEN]
    if stored.any():
        new = new[~stored]
    if len(new):
        obs = pd.DataFrame({
            "process": p.name, "batch_id": new["batch_id"].astype(str), "bar_id": new["bar_id"],
            "bar_key": new["bar_key"], "step": new["step"].astype("int64"),
            "factory": new["factory"].astype(str), "partner": new["partner"].astype(str),
            "variable": new["variable"].astype(str), "value": new["value"],
            "unit": new["unit"].astype(str), "kind": new["kind"].astype(str),
            "observed_ns": _ns(new["timestamp"]), "ingest_id": iid, "source_row": new["_row"]})
        store.add_observations(obs)
        tally.stored += len(obs)
    if plan.genealogy and len(keep):
        k = keep[keep["parent_batch"].notna()]
        store.add_links(pd.DataFrame({
            "process": p.name, "parent_batch": k["parent_batch"].astype(str),
            "parent_bar": k["parent_bar_key"], "parent_step": plan.genealogy_step,
            "child_batch": k["batch_id"].astype(str), "child_bar": k["bar_key"],
            "child_step": k["step"].astype("int64"), "partner": k["partner"].astype(str),
            "ingest_id": iid}))
    if len(keep):
        for (s, v, kd, src, su, u) in keep[["step", "variable", "kind", "_src", "unit_raw", "unit"]] \
                .drop_duplicates(["step", "variable", "kind"]).itertuples(index=False):
            k3 = (int(s), str(v), str(kd))
            if k3 not in tally.seen:
                tally.seen[k3] = (plan.sources[int(src)].value, str(su), str(u))
                tally.specified[k3] = plan.specified.get(k3, True)


def _quarantine(ch: RawChunk, first_fail: pd.DataFrame, qw: QuarantineWriter, tally: _Tally) -> None:
    """The rejected rows' cells with their first reason, in row order; the first reasons kept."""
    pos_of_row = pd.Series(np.arange(len(ch.rows)), index=ch.rows)
    q = first_fail.sort_values("row")
    raw = ch.raw.iloc[pos_of_row.loc[q["row"]].to_numpy()]
    for (row, col, reason), cells in zip(q[["row", "column", "reason"]].itertuples(index=False),
                                         raw.itertuples(index=False)):
        qw.writerow([int(row), col, reason] + ["" if _isna(x) else x for x in cells])
    room = MAX_REASONS - len(tally.reasons)
    for row, col, reason in q[["row", "column", "reason"]].head(max(room, 0)).itertuples(index=False):
        tally.reasons.append(Reason(int(row), str(col), str(reason)))


def _ns(ts: pd.Series) -> pd.Series:
    """UTC timestamps -> Int64 nanoseconds since the epoch (<NA> for NaT)."""
    ns = pd.Series(ts.to_numpy(dtype="datetime64[ns]").view("int64"), index=ts.index, dtype="Int64")
    return ns.mask(ts.isna().to_numpy())


def _isna(x) -> bool:
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def ingest_folder(folder: str | Path, *, store: Store, mapping: str | Path | PartnerMapping | None = None,
                  process: str | Path | Process | None = None, quarantine: str | Path | None = None,
                  chunk_rows: int = 100_000, progress: bool = False,
                  now: datetime | None = None) -> FolderIngestResult:
    """Ingest every Parquet part of a folder, each as its own source file.

    The parts are the folder's visible ``*.parquet`` files in name order
    (:func:`simulators.campaign.campaign_parts`, the same files
    ``recovery fit --data FOLDER`` reads). Each is one :func:`ingest`, with
    its own provenance (path, sha256), row numbers, transaction and quarantine
    file; a part that cannot be read is recorded in
    :attr:`FolderIngestResult.errors` and the others are still ingested.

    Parameters
    ----------
    folder : str or Path
        A dataset folder, e.g. written by ``recovery simulate --out FOLDER``.
    quarantine : str or Path, optional
        A directory for the quarantine CSVs (``<part>.quarantine.csv``);
        default: :func:`default_quarantine_dir` with :func:`ingest`'s names.
    store, mapping, process, chunk_rows, progress, now
        As for :func:`ingest`.

    Returns
    -------
    FolderIngestResult

    Raises
    ------
    IngestError
        The folder does not exist or holds no Parquet parts.
    """
    from simulators.campaign import campaign_parts

    path = Path(folder)
    if not path.is_dir():
        raise IngestError(f"{path}: no such folder")
    parts = campaign_parts(path)
    if not parts:
        raise IngestError(f"{path}: the folder holds no .parquet files")
    m = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping
    proc = process
    if m is None and not isinstance(process, Process):
        proc = load_process(process)  # once, not once per part
    qdir = Path(quarantine) if quarantine else None
    if qdir is not None and qdir.exists() and not qdir.is_dir():
        raise IngestError(f"{qdir}: the quarantine of a folder must be a directory")
    results, errors = [], []
    for part in parts:
        try:
            results.append(ingest(part, store=store, mapping=m, process=proc,
                                  quarantine=qdir / f"{part.stem}.quarantine.csv" if qdir else None,
                                  chunk_rows=chunk_rows, progress=progress, now=now))
        except IngestError as exc:
            errors.append((part, str(exc)))
    return FolderIngestResult(source=path, parts=tuple(parts), results=tuple(results),
                              errors=tuple(errors))
