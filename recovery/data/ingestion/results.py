"""What an ingest returns and how it fails: results, reasons, the error."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IngestError", "Reason", "IngestResult", "FolderIngestResult", "MAX_REASONS",
           "default_quarantine_dir"]

#: Reasons kept in :attr:`IngestResult.reasons` (the quarantine file has all).
MAX_REASONS = 100


class IngestError(ValueError):
    """The file cannot be ingested at all (unreadable, empty, columns missing).

    The message names the file; the store is left unchanged.
    """


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a source row was rejected: its row number (see :mod:`recovery.data.ingest`),
    the source column at fault and the reason."""

    row: int
    column: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did.

    Attributes
    ----------
    source : Path
        The ingested file.
    process : str
        Process the rows belong to.
    rows : int
        Source rows read (blank lines excluded).
    accepted, rejected, duplicates : int
        Source rows stored, sent to quarantine, already stored.
    stored : int
        Observations written (a wide row carries several).
    quarantine : Path or None
        The quarantine file; None when nothing was rejected.
    reasons : tuple of Reason
        The first :data:`MAX_REASONS` rejections, in file order.
    ingest_id : int
        Provenance id in the store.
    """

    source: Path
    process: str
    rows: int
    accepted: int
    rejected: int
    duplicates: int
    stored: int
    quarantine: Path | None
    reasons: tuple[Reason, ...]
    ingest_id: int

    def to_json(self) -> dict:
        """The ``recovery ingest --json`` contract."""
        return {"accepted": self.accepted, "rejected": self.rejected, "duplicates": self.duplicates,
                "quarantine": str(self.quarantine) if self.quarantine else None,
                "reasons": [{"row": r.row, "column": r.column, "reason": r.reason} for r in self.reasons]}


@dataclass(frozen=True)
class FolderIngestResult:
    """What ingesting a folder of Parquet parts did: one ingest per part file.

    Attributes
    ----------
    source : Path
        The folder.
    parts : tuple of Path
        Every part file, in the order ingested.
    results : tuple of IngestResult
        One per part that could be read, in part order.
    errors : tuple of (Path, str)
        Parts that could not be ingested at all, with the message naming the
        file; nothing of them is stored.
    """

    source: Path
    parts: tuple[Path, ...]
    results: tuple[IngestResult, ...]
    errors: tuple[tuple[Path, str], ...]

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.results)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.results)

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.results)

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.results)

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.results)

    @property
    def quarantine(self) -> list[Path]:
        """The quarantine files written (one per part with rejects)."""
        return [r.quarantine for r in self.results if r.quarantine is not None]

    def reasons(self) -> list[tuple[Path, Reason]]:
        """The first :data:`MAX_REASONS` rejections over all parts, in part order."""
        return [(r.source, x) for r in self.results for x in r.reasons][:MAX_REASONS]

    def to_json(self) -> dict:
        """The ``recovery ingest FOLDER --json`` contract: totals, the quarantine
        files, reasons with their ``file``, and one object per part."""
        done = {r.source: r for r in self.results}
        failed = dict(self.errors)
        files = [self._file_json(done.get(f), f, failed.get(f)) for f in self.parts]
        return {"accepted": self.accepted, "rejected": self.rejected, "duplicates": self.duplicates,
                "quarantine": [str(q) for q in self.quarantine],
                "reasons": [{"file": str(f), "row": x.row, "column": x.column, "reason": x.reason}
                            for f, x in self.reasons()],
                "files": files}

    @staticmethod
    def _file_json(r: IngestResult | None, path: Path, error: str | None) -> dict:
        if r is None:
            return {"file": str(path), "rows": 0, "accepted": 0, "rejected": 0, "duplicates": 0,
                    "quarantine": None, "ingest_id": None, "error": error}
        return {"file": str(r.source), "rows": r.rows, "accepted": r.accepted, "rejected": r.rejected,
                "duplicates": r.duplicates, "quarantine": str(r.quarantine) if r.quarantine else None,
                "ingest_id": r.ingest_id, "error": None}


def default_quarantine_dir() -> Path:
    """``$RECOVERY_QUARANTINE_DIR``, else ``quarantine/`` under the user's data directory."""
    env = os.environ.get("RECOVERY_QUARANTINE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("recovery")) / "quarantine"

