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
