"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from recovery.cli import UserError


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v


def seed_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole-number seed, got '{text}'") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"a seed must be >= 0, got {v}")
    return v


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
