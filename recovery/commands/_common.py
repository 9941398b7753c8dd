"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from recovery.cli import UserError


def _int_at_least(text: str, minimum: int, what: str, below: str) -> int:
    """``text`` as a whole number >= ``minimum``; ``what`` and ``below`` word the errors."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"{below}, got {v}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a whole number", "expected a number >= 1")


def seed_int(text: str) -> int:
    return _int_at_least(text, 0, "a whole-number seed", "a seed must be >= 0")


def share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got '{text}'") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v


def load_process_arg(source):
    """Load ``--process`` (a path, 'default' or 'small'); errors become UserError."""
    from simulators.definition import ProcessDefinitionError, load_process

    try:
        return load_process(source)
    except ProcessDefinitionError as exc:
        raise UserError(f"invalid process file: {exc}") from None


def output_path(text: str, suffix: str = ".parquet") -> Path:
    path = Path(text)
    if path.suffix != suffix:
        raise UserError(f"{text}: expected a {suffix} file name")
    if not path.parent.exists():
        raise UserError(f"{text}: directory {path.parent} does not exist")
    return path


def load_plant_arg(path: str | None, process):
    """Load ``--plant`` (a process file of ``process``'s structure, other physics), or None.

    Errors (unreadable file, other structure: the first difference) become UserError.
    """
    if path is None:
        return None
    from simulators.definition import ProcessDefinitionError, load_process

    if not Path(path).is_file():
        raise UserError(f"--plant {path}: no such file")
    try:
        plant = load_process(path)
    except ProcessDefinitionError as exc:
        raise UserError(f"--plant {path}: invalid process file: {exc}") from None
    diff = process.structure_difference(plant)
    if diff is not None:
        raise UserError(f"--plant {path}: not a plant of process '{process.name}' ({process.source}): "
                        f"different structure, first difference: {diff}")
    return plant


def describe(process, path) -> dict:
    """``{"name", "digest", "path"}`` of a process file, for JSON outputs."""
    return {"name": process.name, "digest": process.digest,
            "path": str(path) if path is not None else process.source}


def read_history(path: str | Path, *, batch: str | None = None, check: bool = False, process=None,
                 csv: bool = False):
    """Read step data for a subcommand: the one way the CLI reads history.

    Parameters
    ----------
    path : str or Path
        A ``.parquet`` file, a folder of Parquet parts, or (with ``csv``) a
        ``.csv`` file in the step-data schema.
    batch : str, optional
        Keep only this batch's rows; it must be in the data.
    check : bool
        Validate the rows (:func:`simulators.schema.validate`), against
        ``process`` when given; unchecked rows are returned as stored.
    process : Process, optional
        The process the rows must match (with ``check``).
    csv : bool
        Also accept a CSV file (any name not ending in ``.parquet``).

    Returns
    -------
    DataFrame
        The rows (of ``batch``), coerced to the schema when checked.

    Raises
    ------
    UserError
        The path is missing, cannot be read (naming the format), is not step
        data of ``process`` (the schema's message), holds no rows, or lacks ``batch``.
    """
    import pandas as pd

    from simulators.campaign import read_campaign
    from simulators.schema import SchemaError, validate

    f = Path(path)
    if not f.exists():
        raise UserError(f"{path}: no such file or folder")
    as_csv = csv and not f.is_dir() and f.suffix != ".parquet"
    try:
        df = pd.read_csv(f) if as_csv else read_campaign(f)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
        raise UserError(f"{path}: cannot read as {'CSV' if as_csv else 'Parquet'}: {exc}") from None
    if check:
        try:
            df = validate(df, process)
        except SchemaError as exc:
            if process is None:
                raise UserError(f"{path}: not step data in the schema: {exc}") from None
            raise UserError(f"{path} does not match the process '{process.name}': {exc}") from None
    if "batch_id" not in df or not len(df):
        raise UserError(f"{path}: no step data (expected the step-data schema)")
    if batch is not None:
        ids = list(pd.unique(df["batch_id"].astype(str)))
        if batch not in ids:
            raise UserError(f"batch '{batch}' is not in {path} ({len(ids)} batches there)")
        df = df[df["batch_id"].astype(str) == batch]
    return df


def read_store_history(url: str | None, process, *, batch: str | None = None):
    """Read one process's step data from a store (``--store URL [--batch ID]``).

    Parameters
    ----------
    url : str or None
        Store URL (None: ``$RECOVERY_STORE``, else the default DuckDB file).
    process : Process
        Only this process's rows (by name); the rows are validated against it.
    batch : str, optional
        Only this batch; it must be stored.

    Returns
    -------
    DataFrame
        The rows in the step-data schema.

    Raises
    ------
    UserError
        The store cannot be opened or read, holds no rows of the process, or
        lacks ``batch``.
    """
    from recovery.data.store import StoreError, open_store
    from simulators.schema import SchemaError, validate

    where = f"--store {url}" if url else "the default store"
    try:
        with open_store(url) as st:
            df = st.read_steps(process=process.name, batch_ids=[batch] if batch is not None else None)
    except StoreError as exc:
        raise UserError(f"{where}: {exc}") from None
    if not len(df):
        what = f"batch '{batch}' of process '{process.name}'" if batch is not None else \
            f"step data of process '{process.name}'"
        raise UserError(f"{where} holds no {what}")
    try:
        return validate(df, process)
    except SchemaError as exc:
        raise UserError(f"{where}: stored rows do not match the process '{process.name}': {exc}") from None


def model_calibration(model_dir, process, *, skip: bool = False):
    """The calibrated physics saved in a model folder (None: none saved, or ``skip``), checked
    against the model's process; a bad or foreign calibration is a :class:`UserError`."""
    if skip:
        return None
    from recovery.calibration import CalibrationLoadError
    from recovery.pipeline import load_posterior

    try:
        posterior = load_posterior(model_dir)
        if posterior is not None:
            posterior.check_process(process)
    except CalibrationLoadError as exc:
        raise UserError(f"--model {model_dir}: {exc}") from None
    return posterior
