"""Ingestion: a partner's file -> validated step data in the store, rejects to quarantine.

:func:`ingest` reads a CSV or Parquet file in chunks, maps every chunk into
candidate rows of the step-data schema (``simulators.schema``) with a
:class:`~recovery.data.mapping.PartnerMapping` (or directly, when the file is
already in the schema), converts units with pint, validates every candidate
with a pandera ``DataFrameSchema`` built from the schema and the process, and
then, against the store, checks genealogy and duplicates. One source row is
accepted only when every value it carries passes; otherwise the whole row goes
to the quarantine file with its first reason. Everything one ingest writes is
in one transaction.

:func:`ingest_folder` ingests a folder of Parquet parts (as ``recovery
simulate --out FOLDER`` writes them) part by part: each part is one
:func:`ingest` of its own, with its own provenance, row numbers, transaction
and quarantine file, and a part that cannot be read does not stop the others.

Row numbers
-----------
A reason's ``row`` is the **1-based line number in the source file** for CSV
(metadata and header lines count, so an editor's line number finds it; quoted
fields spanning lines are not supported), and the 1-based row number for
Parquet. Blank lines are not rows.

Counting
--------
``accepted + rejected + duplicates == rows``: a row is a *duplicate* when every
value it carries is already stored with the same key
``(process, batch_id, bar_id, step, variable, kind)`` and the same value, either
from an earlier ingest or from an earlier *accepted* row of this file. The same
key with a different value is a *conflict*, and the row is rejected; the first
value wins. Rows are judged in file order, each against the store and the rows
accepted before it (a rejected row is neither a reference for duplicates nor a
genealogy parent), so the result does not depend on the chunk size.

Quarantine
----------
The quarantine CSV has ``row, column, reason`` and the source row's cells as
read. Cells a spreadsheet would run as a formula (starting with ``= + - @``, tab
or carriage return, except plain numbers) get a leading ``'``
(:func:`neutralise_cell`). It is written to ``.<name>.<host>.<pid>.partial`` in
the same folder and renamed before the store commits; partial files of ingests
that died are removed at the next ingest into that folder.

Where the code lives
--------------------
This module is the public face; the stages are in :mod:`recovery.data.ingestion`:
``reading`` (files -> raw chunks), ``candidates`` (mapping -> candidate rows),
``parsing`` (schema dtypes, units, the process's expectations), ``checks``
(the pandera contract and the reasons), ``judging`` (store, duplicates,
conflicts, genealogy), ``quarantine`` and ``run`` (the ingest), with the
columns each stage adds declared in ``columns``. What a row must satisfy
against its process (known step, its factory and partner, known variables,
the process's units, lever steps and bounds) is
:class:`simulators.schema.StepRules`, the rules the simulator's own check
uses; ingestion adds what is about partner files: mappings, unit conversion,
plausible ranges, timestamps, duplicates and the quarantine.

Speed: Arrow's CSV reader parses plain files and Arrow plain decimal numbers;
what depends only on what a value is (step, variable, kind, unit) is worked
out once per distinct combination (``ingestion.distinct``); pandas' parser and
pandas' number parsing take the rest, with the same results (tests hold the
fast paths equal to the slow ones).

Ranges
------
A measurement is rejected as implausible outside
``[lower - 10 (upper - lower), upper + 10 (upper - lower)]`` of its
characteristic's band; values out of spec but inside that range are data the
toolkit exists for, and are accepted. A lever outside its hard bounds is rejected.
"""

from __future__ import annotations

from recovery.data.ingestion.parsing import PLAUSIBLE_WIDTHS
from recovery.data.ingestion.quarantine import _HOST, neutralise_cell  # noqa: F401 - _HOST: tests name partial files
from recovery.data.ingestion.results import (MAX_REASONS, FolderIngestResult, IngestError, IngestResult,
                                             Reason, default_quarantine_dir)
from recovery.data.ingestion.run import FUTURE_SLACK, ingest, ingest_folder  # noqa: F401

__all__ = ["ingest", "ingest_folder", "IngestResult", "FolderIngestResult", "IngestError", "Reason",
           "PLAUSIBLE_WIDTHS", "MAX_REASONS", "default_quarantine_dir", "neutralise_cell"]
