"""Data reduction: step data -> per-batch summaries (:func:`summarise`), and what
the training summaries cover (:class:`Ranges`, :class:`ReadingCloud`).

The fit and the queries both read data only through these summaries.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from recovery.causal.errors import DataError
from simulators.definition import Process

if TYPE_CHECKING:   # pandas is loaded by summarise only: a saved model loads without it
    import pandas as pd

__all__ = ["Summaries", "summarise", "concat_summaries", "Ranges", "ranges", "ReadingCloud"]


@dataclass(frozen=True)
class Summaries:
    """Per-batch summary statistics of step data.

    Attributes
    ----------
    batch_ids : ndarray of str (B,)
    mean, var : ndarray (B, n_insp, n_chars)
        Sample mean and variance (ddof 1) of the gauged bars, in the process's
        units; NaN where not gauged (variance also NaN with fewer than 2 bars).
    count : ndarray of int (B, n_insp, n_chars)
    levers : ndarray (B, n_levers)
        Lever values; the nominal value where the data hold none.
    lever_seen : ndarray of bool (B, n_levers)
    day : ndarray (B,)
        Production day (``season_day`` context rows, else days since the first
        timestamp in the data).
    last_step : ndarray of int (B,)
        Last step with any row.
    ignored_rows : int
        Measurement rows at steps that are not inspections (not used).
    """

    batch_ids: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray
    levers: np.ndarray
    lever_seen: np.ndarray
    day: np.ndarray
    last_step: np.ndarray
    ignored_rows: int = 0

    @property
    def n_batches(self) -> int:
        return len(self.batch_ids)

    def take(self, idx) -> "Summaries":
        idx = np.asarray(idx)
        return Summaries(self.batch_ids[idx], self.mean[idx], self.var[idx], self.count[idx],
                         self.levers[idx], self.lever_seen[idx], self.day[idx],
                         self.last_step[idx], self.ignored_rows)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.mean, self.var, self.count, self.levers, self.day):
            h.update(np.ascontiguousarray(np.nan_to_num(a, nan=-1e300)).tobytes())
        h.update("\x1f".join(map(str, self.batch_ids)).encode())
        return h.hexdigest()[:16]


def summarise(df: pd.DataFrame, process: Process, *, validate: bool = True) -> Summaries:
    """Reduce step data (the schema of ``simulators.schema``) to per-batch summaries.

    Parameters
    ----------
    df : DataFrame
        Step data of one or more batches.
    process : Process
        The process the data must belong to.
    validate : bool
        Check the table against the schema and the process first.

    Returns
    -------
    Summaries

    Raises
    ------
    DataError
        The table does not fit the schema or the process (the message shows
        the first failing rows), or it holds no measurement.

    Examples
    --------
    >>> from simulators.process import Simulator
    >>> sim = Simulator("small")
    >>> s = summarise(sim.simulate(3, seed=0).observations, sim.process)
    >>> s.mean.shape
    (3, 3, 6)
    """
    import pandas as pd

    from simulators.schema import SchemaError
    from simulators.schema import validate as validate_schema

    if validate:
        try:
            df = validate_schema(df, process)
        except SchemaError as exc:
            raise DataError(f"step data do not match process '{process.name}' "
                            f"(digest {process.digest}): {exc}") from None
    if len(df) == 0:
        raise DataError("the step data are empty")
    a = process.arrays
    batch_codes, batch_ids = pd.factorize(df["batch_id"].astype(str), sort=False)
    nb = len(batch_ids)
    n_insp, nc, nl = len(process.inspections), process.n_chars, len(process.levers)
    step = df["step"].to_numpy(dtype=np.int64)
    row_kind = df["kind"].astype(str).to_numpy()
    var = df["variable"].astype(str).to_numpy()
    val = df["value"].to_numpy(dtype=np.float64, na_value=np.nan)

    meas = row_kind == "measurement"
    q_all = np.where((step >= 1) & (step <= process.n_steps),
                     a.insp_of_step[np.clip(step, 1, process.n_steps) - 1], -1)
    cidx = pd.Series(var).map(dict(process.char_index)).to_numpy(dtype=float, na_value=-1)
    use = meas & (q_all >= 0) & (cidx >= 0) & np.isfinite(val)
    ignored = int((meas & ~use).sum())
    if not use.any():
        raise DataError("the step data hold no measurement at an inspection step")
    b, q, c = batch_codes[use], q_all[use], cidx[use].astype(np.int64)
    v = val[use]
    s1 = np.zeros((nb, n_insp, nc))
    s2 = np.zeros((nb, n_insp, nc))
    cnt = np.zeros((nb, n_insp, nc), dtype=np.int64)
    # Centre before squaring so the variance keeps its digits (diameters are ~16 mm,
    # their spread ~0.005 mm).
    ref = np.zeros(nc)
    for j in range(nc):
        sel = c == j
        if sel.any():
            ref[j] = np.median(v[sel])
    vc = v - ref[c]
    np.add.at(s1, (b, q, c), vc)
    np.add.at(s2, (b, q, c), vc * vc)
    np.add.at(cnt, (b, q, c), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, s1 / cnt, np.nan)
        var_ = np.where(cnt > 1, (s2 - cnt * mean**2) / (cnt - 1), np.nan)
    mean = mean + ref[None, None, :]
    var_ = np.maximum(var_, 0.0)

    levers = np.tile(process.nominal_plan(), (nb, 1))
    seen = np.zeros((nb, nl), dtype=bool)
    lev = row_kind == "lever"
    if lev.any() and nl:
        li = pd.Series(var[lev]).map(dict(process.lever_index)).to_numpy(dtype=float, na_value=-1)
        ok = li >= 0
        levers[batch_codes[lev][ok], li[ok].astype(np.int64)] = val[lev][ok]
        seen[batch_codes[lev][ok], li[ok].astype(np.int64)] = True

    day = np.full(nb, np.nan)
    ctx = (row_kind == "context") & (var == "season_day")
    if ctx.any():
        day[batch_codes[ctx]] = val[ctx]
    if np.isnan(day).any() and "timestamp" in df:
        ts = pd.to_datetime(df["timestamp"], utc=True)
        if ts.notna().any():
            t0 = ts.min()
            first = pd.Series(ts).groupby(batch_codes).min()
            days = ((first - t0).dt.total_seconds() / 86400.0).to_numpy()
            miss = np.isnan(day)
            day[miss] = days[np.flatnonzero(miss)] if len(days) == nb else 0.0
    day = np.nan_to_num(day, nan=0.0)
    last = pd.Series(step).groupby(batch_codes).max().to_numpy()
    return Summaries(np.asarray(batch_ids, dtype=object), mean, var_, cnt, levers, seen, day,
                     last.astype(np.int64), ignored)



def concat_summaries(a: Summaries, b: Summaries) -> Summaries:
    """The batches of ``a`` followed by those of ``b``."""
    return Summaries(np.concatenate([a.batch_ids, b.batch_ids]), *(
        np.concatenate([getattr(a, f), getattr(b, f)]) for f in
        ("mean", "var", "count", "levers", "lever_seen", "day", "last_step")), a.ignored_rows + b.ignored_rows)


@dataclass(frozen=True)
class Ranges:
    """What the training data cover: for out-of-range checks.

    Attributes
    ----------
    lever_low, lever_high : ndarray (n_levers,)
        Lever values seen.
    mean_low, mean_high : ndarray (n_insp, n_chars)
        Sample means seen per gauged pair (NaN where never gauged).
    """

    lever_low: np.ndarray
    lever_high: np.ndarray
    mean_low: np.ndarray
    mean_high: np.ndarray


def ranges(summ: Summaries) -> Ranges:
    """The lever values and sample means the summaries span."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Ranges(summ.levers.min(axis=0), summ.levers.max(axis=0),
                      np.nanmin(summ.mean, axis=0), np.nanmax(summ.mean, axis=0))


class ReadingCloud:
    """The training batches' sample means at each inspection, as a Gaussian cloud.

    :meth:`distance` tells how far one batch's readings lie from it. The mean
    and precision per (inspection, set of gauged characteristics) are computed
    on first use and kept: a service answers many queries on one model.

    Parameters
    ----------
    summaries : Summaries
        The training summaries.
    """

    def __init__(self, summaries: Summaries):
        self._mean = summaries.mean
        self._cache: dict = {}

    def distance(self, q: int, readings: np.ndarray) -> tuple[float | None, float]:
        """Squared Mahalanobis distance of ``readings (n_chars,)`` (NaN: not gauged)
        at inspection ``q`` from the training cloud, and the largest such distance
        among the training batches themselves (``None, 0.0``: too few training
        batches gauged that way to say)."""
        obs = np.isfinite(readings)
        key = (q, tuple(obs))
        if key not in self._cache:
            X = self._mean[:, q][:, obs]
            X = X[np.isfinite(X).all(axis=1)]
            if len(X) < obs.sum() + 5:
                self._cache[key] = None
            else:
                mu = X.mean(axis=0)
                cov = np.cov(X, rowvar=False).reshape(obs.sum(), obs.sum())
                cov += 1e-12 * np.eye(len(mu)) * np.maximum(np.diag(cov), 1e-30)
                prec = np.linalg.pinv(cov)
                d2 = np.einsum("bi,ij,bj->b", X - mu, prec, X - mu)
                self._cache[key] = (mu, prec, float(d2.max()))
        if self._cache[key] is None:
            return None, 0.0
        mu, prec, d2max = self._cache[key]
        x = readings[obs] - mu
        return float(x @ prec @ x), d2max
