"""Reading: a CSV or Parquet file becomes chunks of raw cells plus source row numbers.

Row numbers are those of :mod:`recovery.data.ingest`: the 1-based line in a
CSV file (metadata and header lines count; blank lines are no rows), the
1-based row in a Parquet file.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from recovery.data.ingestion.results import IngestError
from recovery.data.mapping import ColumnRef, PartnerMapping

__all__ = ["RawChunk", "FileColumns", "CsvReader", "ParquetReader", "open_reader"]

#: Bytes of CSV text Arrow parses at a time. Its parse buffers per block are several times
#: the block: 4 MiB blocks cost ~100 MiB more peak memory than 512 KiB, for the same CPU time.
_BLOCK = 1 << 19


@dataclass
class RawChunk:
    """One chunk of a file: its cells as read and the source row number of each."""

    raw: pd.DataFrame      # one column per source column, positional (0..), as read
    rows: np.ndarray       # source row number of each raw row


@dataclass
class FileColumns:
    """The file's columns: labels for messages and a resolver for mapping references.

    (Named apart from :class:`recovery.causal.layout.Layout`, which is about
    the causal model's variables, not a file's columns.)
    """

    path: Path
    labels: list[str]
    header: list[str] | None
    header_line: int
    separator: str | None = None
    probe_line: str = ""

    def index(self, ref: ColumnRef) -> int:
        if isinstance(ref, int):
            if ref > len(self.labels):
                raise IngestError(f"{self.path}: column {ref} named in the mapping is beyond the "
                                  f"file's {len(self.labels)} column(s){self._hint()}")
            return ref - 1
        names = self.header or []
        hits = [i for i, h in enumerate(names) if h.strip() == ref]
        if not hits:
            where = f" (line {self.header_line})" if self.header_line else ""
            raise IngestError(f"{self.path}: column '{ref}' named in the mapping is not in the "
                              f"header{where}: {[h for h in names]}{self._hint()}")
        if len(hits) > 1:
            raise IngestError(f"{self.path}: column '{ref}' appears {len(hits)} times in the "
                              f"header; refer to it by number")
        return hits[0]

    def _hint(self) -> str:
        if self.separator is None:
            return ""
        counts = {s: self.probe_line.count(s) for s in (",", ";", "\t", "|") if s != self.separator}
        best = max(counts, key=counts.get) if counts else None
        fields = len(next(csv.reader([self.probe_line], delimiter=self.separator), []))
        if best is not None and counts[best] > 0 and fields <= 1:
            return (f"; the line splits into {fields} field with separator "
                    f"{self.separator!r} but contains {counts[best]} {best!r}: is the separator {best!r}?")
        return ""


class CsvReader:
    """A CSV file read in chunks of text cells (every cell a string)."""

    def __init__(self, path: Path, *, encoding: str, separator: str, header_line: int,
                 data_line: int):
        self.path, self.encoding, self.sep = path, encoding, separator
        self.data_line = data_line
        head: list[str] = []
        try:
            with open(path, encoding=encoding, newline="") as f:
                for _ in range(data_line):
                    line = f.readline()
                    if not line:
                        break
                    head.append(line.rstrip("\r\n"))
        except UnicodeDecodeError:
            raise self._decode_error() from None
        if len(head) < data_line or not any(h.strip() for h in head[data_line - 1:]):
            raise IngestError(f"{path}: the file has no data rows (expected the first on line {data_line})")
        split = lambda s: next(csv.reader([s], delimiter=separator)) if s else []  # noqa: E731
        header = split(head[header_line - 1]) if header_line else None
        first = split(head[data_line - 1])
        n = max(len(header or []), len(first))
        labels = []
        for i in range(n):
            h = header[i].strip() if header and i < len(header) else ""
            unique = h and sum(x.strip() == h for x in header) == 1
            labels.append(h if unique else f"column {i + 1}")
        probe = head[header_line - 1] if header_line else head[data_line - 1]
        self.layout = FileColumns(path, labels, header, header_line, separator, probe)
        self.total = path.stat().st_size

    def _decode_error(self) -> IngestError:
        with open(self.path, "rb") as f:
            for no, line in enumerate(f, start=1):
                try:
                    line.decode(self.encoding)
                except UnicodeDecodeError as exc:
                    bad = line[exc.start]
                    hint = (" (is it latin-1 or cp1252? set [file] encoding in the mapping)"
                            if self.encoding.replace("_", "-") in ("utf-8", "utf8") else "")
                    return IngestError(f"{self.path}: line {no} is not valid {self.encoding}: "
                                       f"byte 0x{bad:02x} at position {exc.start + 1}{hint}")
        return IngestError(f"{self.path}: cannot be decoded as {self.encoding}")

    def chunks(self, size: int, progress: Callable[[int], None]) -> Iterator[RawChunk]:
        """Chunks of ``size`` rows (blank lines dropped), each with its line numbers.

        Arrow's multithreaded reader parses the file when it is plain (UTF-8,
        no quote characters, no lone carriage returns: each line one row, so
        line numbers are exact); pandas' C parser reads the rest, and takes
        over from the first row Arrow cannot parse (a ragged or blank line,
        bad UTF-8), so errors are reported as before.
        """
        start = self.data_line
        if self._plain():
            start = yield from self._arrow_chunks(size, progress)
            if start is None:
                return
        yield from self._pandas_chunks(size, progress, start)

    def _plain(self) -> bool:
        """Every line is one row and the text is UTF-8 without a byte-order mark (a cheap scan)."""
        if self.encoding.lower().replace("_", "-") not in ("utf-8", "utf8") or len(self.layout.labels) < 2:
            return False
        with open(self.path, "rb") as f:
            if f.read(3) == b"\xef\xbb\xbf":
                return False
            f.seek(0)
            for block in iter(lambda: f.read(1 << 22), b""):
                if b'"' in block:
                    return False
                cr = block.count(b"\r")  # usually none: the slower count of pairs is then skipped
                if cr and cr != block.count(b"\r\n"):
                    return False
        return True

    def _arrow_chunks(self, size: int, progress: Callable[[int], None]) -> Iterator[RawChunk]:
        """Chunks parsed by Arrow; returns None at the end of the file, or the line
        from which pandas must go on (Arrow cannot parse a row there)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        n = len(self.layout.labels)
        names = [str(i) for i in range(n)]
        line = self.data_line
        with open(self.path, "rb") as fh:
            for _ in range(self.data_line - 1):
                fh.readline()
            last, buf, held = 0, [], 0
            try:
                # opening parses the first block already: it may fail too
                reader = pacsv.open_csv(
                    fh, read_options=pacsv.ReadOptions(column_names=names, block_size=_BLOCK),
                    parse_options=pacsv.ParseOptions(delimiter=self.sep, ignore_empty_lines=False),
                    convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                                         strings_can_be_null=False))
                for batch in reader:
                    buf.append(pa.Table.from_batches([batch]))
                    held += batch.num_rows
                    while held >= size:
                        table = pa.concat_tables(buf)
                        buf, held = [table.slice(size)], held - size
                        line = yield from self._emit(table.slice(0, size), line)
                        pos = fh.tell()
                        progress(pos - last)
                        last = pos
            except pa.ArrowException:
                return line
            if held:
                yield from self._emit(pa.concat_tables(buf), line)
            progress(self.total - last)
        return None

    @staticmethod
    def _emit(table, line: int) -> Iterator[RawChunk]:
        """One chunk from an Arrow table of rows starting on ``line``; returns the next line."""
        raw = table.to_pandas()
        raw.columns = range(raw.shape[1])
        rows = np.arange(line, line + len(raw), dtype=np.int64)
        raw, rows = _drop_blank(raw, rows)
        if len(raw):
            yield RawChunk(raw, rows)
        return line + table.num_rows

    def _pandas_chunks(self, size: int, progress: Callable[[int], None], start: int) -> Iterator[RawChunk]:
        n = len(self.layout.labels)
        row = start
        with open(self.path, "rb") as fh:
            try:
                reader = pd.read_csv(
                    fh, sep=self.sep, header=None, names=list(range(n)), skiprows=start - 1,
                    dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                    encoding=self.encoding, chunksize=size, engine="c", quoting=csv.QUOTE_MINIMAL)
                last = 0
                for raw in reader:
                    rows = np.arange(row, row + len(raw), dtype=np.int64)
                    row += len(raw)
                    raw, rows = _drop_blank(raw, rows)
                    pos = fh.tell()
                    progress(pos - last)
                    last = pos
                    if len(raw):
                        yield RawChunk(raw, rows)
            except UnicodeDecodeError:
                raise self._decode_error() from None
            except pd.errors.ParserError as exc:
                raise IngestError(f"{self.path}: cannot be read as CSV with separator {self.sep!r}: "
                                  f"{_parser_message(exc, start)}") from None


def _drop_blank(raw: pd.DataFrame, rows: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Without blank lines (or lines of bare separators): they are not rows."""
    # only a row whose first cell is blank can be blank: look at those alone
    maybe = np.flatnonzero((raw[0].fillna("").str.strip() == "").to_numpy(dtype=bool))
    if len(maybe):
        cells = raw.iloc[maybe].fillna("")
        blank = maybe[(cells.apply(lambda s: s.str.strip()) == "").all(axis=1).to_numpy()]
        if len(blank):
            keep = np.ones(len(raw), dtype=bool)
            keep[blank] = False
            raw, rows = raw[keep], rows[keep]
    return raw.reset_index(drop=True), rows


def _parser_message(exc: Exception, data_line: int) -> str:
    msg = str(exc).strip()
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
    if m:
        line = int(m.group(2)) + data_line - 1
        return f"line {line} has {m.group(3)} fields, the file's rows have {m.group(1)}"
    return msg


class ParquetReader:
    """A Parquet file read in record batches (typed cells)."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"{path}: not a readable Parquet file: {exc}") from None
        names = list(self.file.schema_arrow.names)
        self.total = self.file.metadata.num_rows
        if self.total == 0:
            raise IngestError(f"{path}: the file has no data rows")
        self.layout = FileColumns(path, names, names, 0)

    def chunks(self, size: int, progress: Callable[[int], None]) -> Iterator[RawChunk]:
        import pyarrow as pa

        row = 1
        try:
            for batch in self.file.iter_batches(batch_size=size):
                raw = batch.to_pandas()
                raw.columns = range(raw.shape[1])
                rows = np.arange(row, row + len(raw), dtype=np.int64)
                row += len(raw)
                progress(len(raw))
                yield RawChunk(raw, rows)
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"{self.path}: not a readable Parquet file: {exc}") from None


def open_reader(path: Path, mapping: PartnerMapping | None) -> CsvReader | ParquetReader:
    """The reader for ``path``: the mapping's format, else by suffix (schema files)."""
    if mapping is not None:
        f = mapping.file
        if f.format == "parquet":
            return ParquetReader(path)
        return CsvReader(path, encoding=f.encoding, separator=f.separator,
                          header_line=f.header_line, data_line=f.data_line)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return ParquetReader(path)
    if suffix == ".csv":
        return CsvReader(path, encoding="utf-8", separator=",", header_line=1, data_line=2)
    raise IngestError(f"{path}: without --mapping the file must be step data in the schema, "
                      f"as .parquet or .csv; got '{suffix or 'no suffix'}'")
