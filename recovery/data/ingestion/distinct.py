"""Row-wise work done once per distinct value, then spread back to every row.

Step data repeats itself: a chunk of 100,000 rows holds a few dozen
(step, variable, kind, unit) combinations, a few thousand batch ids and
timestamps. Parsing, unit conversion and the process's expectations are
row-wise functions, so computing them on the distinct values and taking the
results back by code gives the same columns at a fraction of the cost.
(``f`` must be row-wise: its result for a row may depend on that row only.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["distinct_rows", "by_distinct", "by_distinct_rows"]

#: Above this share of distinct values, factorizing costs more than it saves.
_WORTH = 0.5


def distinct_rows(cols: list[pd.Series]) -> tuple[np.ndarray, np.ndarray]:
    """(code of each row's combination of values, position of each combination's first row).

    Missing values are values of their own (<NA> and NaN included).
    """
    n = len(cols[0])
    key = np.zeros(n, dtype=np.int64)
    for s in cols:
        c, u = pd.factorize(s, use_na_sentinel=False)
        # re-factorized after each column, so the key stays below n * len(u)
        key, _ = pd.factorize(key * max(len(u), 1) + c)
    codes, uniq = pd.factorize(key)
    first = np.empty(len(uniq), dtype=np.int64)
    first[codes[::-1]] = np.arange(n - 1, -1, -1, dtype=np.int64)
    return codes.astype(np.int64, copy=False), first


def _spread(values, codes: np.ndarray, index: pd.Index):
    if isinstance(values, tuple):
        return tuple(_spread(v, codes, index) for v in values)
    if isinstance(values, pd.DataFrame):
        return pd.DataFrame({c: values[c].array.take(codes) for c in values.columns}, index=index)
    return pd.Series(values.array.take(codes), index=index, name=values.name)


def by_distinct(s: pd.Series, f: Callable[[pd.Series], object]):
    """``f(s)`` (a Series, or a tuple of them), computed on the distinct values of ``s``."""
    if len(s) < 64:
        return f(s)
    codes, uniq = pd.factorize(s, use_na_sentinel=False)
    if len(uniq) > _WORTH * len(s):
        return f(s)
    return _spread(f(pd.Series(uniq, dtype=s.dtype, name=s.name)), codes, s.index)


def by_distinct_rows(frame: pd.DataFrame, f: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """``f(frame)`` (a frame with ``frame``'s index), computed on its distinct rows."""
    if len(frame) < 64:
        return f(frame)
    codes, first = distinct_rows([frame[c] for c in frame.columns])
    if len(first) > _WORTH * len(frame):
        return f(frame)
    return _spread(f(frame.iloc[first].reset_index(drop=True)), codes, frame.index)
