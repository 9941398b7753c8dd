"""The quarantine file: rejected rows with their reason, safe to open in a spreadsheet.

It has ``row, column, reason`` and the source row's cells as read. Cells a
spreadsheet would run as a formula get a leading ``'`` (:func:`neutralise_cell`).
An ingest writes it to ``.<name>.<host>.<pid>.partial`` in the same folder and
renames it before the store commits; :func:`remove_stale_partials` removes
the partial files of ingests that died.
"""

from __future__ import annotations

import csv
import os
import re
import socket
from pathlib import Path

__all__ = ["neutralise_cell", "QuarantineWriter", "remove_stale_partials", "partial_path"]

# A spreadsheet runs a cell starting with one of these as a formula
# (=HYPERLINK(...), +cmd|..., @SUM(...)); OWASP's CSV-injection advice: prefix a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ... except plain numbers, so negative values stay numbers for the reader
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?")
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_PARTIAL = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.partial$")


def neutralise_cell(cell: object) -> object:
    """A quarantine cell safe to open in a spreadsheet.

    Text starting with ``= + - @``, a tab or a carriage return gets a leading
    ``'`` (OWASP CSV injection), so ``=HYPERLINK(...)`` is shown, not run; plain
    numbers such as ``-16,1`` are left as they are. Other cells are unchanged.

    Examples
    --------
    >>> print(neutralise_cell('=HYPERLINK("http://x","y")'))
    '=HYPERLINK("http://x","y")
    >>> neutralise_cell("-16,1")
    '-16,1'
    """
    if isinstance(cell, str) and cell.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


class QuarantineWriter:
    """csv.writer whose text cells are neutralised (:func:`neutralise_cell`)."""

    def __init__(self, f):
        self._w = csv.writer(f)

    def writerow(self, cells: list) -> None:
        self._w.writerow([neutralise_cell(c) for c in cells])


def remove_stale_partials(folder: Path) -> None:
    """Remove the temporary quarantine files that ingests killed on this machine left.

    A temporary file is named ``.<name>.<host>.<pid>.partial``; it is stale when
    its process is gone (files of other hosts, on a shared folder, are left alone).
    ``<name>.partial`` files of earlier versions, which had no owner, go too.
    """
    for f in folder.glob("*.partial"):
        m = _PARTIAL.match(f.name)
        if m is None:
            if f.name.endswith(".csv.partial"):
                f.unlink(missing_ok=True)
            continue
        if m["host"] != _HOST:
            continue
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except (PermissionError, OverflowError):
            pass  # alive under another user (or no such pid at all): not ours to judge




def partial_path(qpath: Path) -> Path:
    """The temporary file of this process for the quarantine file ``qpath``."""
    return qpath.with_name(f".{qpath.name}.{_HOST}.{os.getpid()}.partial")
