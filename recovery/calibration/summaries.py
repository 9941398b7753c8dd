"""The plant's history as summary statistics, and the same statistics from the simulator.

Calibration compares the history with the simulator through a vector of
summaries that the uncertain physics moves. Per inspection and characteristic
(a *pair*), each batch contributes the sample mean of its gauged bars; the
pair's feature is that mean at the first inspection that gauges the
characteristic, and its *change* since the previous inspection that gauges it
afterwards. Changes localise physics: a difference upstream (a die that draws
more) shows at one pair instead of at every later one. The features of all
complete batches are regressed on the lever values actually used (the nominal
plan's intercept, one slope per lever that past engineers moved and a
curvature for the levers moved often enough, for pairs after the lever's
step); intercepts, slopes and curvatures are the summaries. The
exploratory lever moves in the history are what make the slopes, and so the
lever sensitivities, informative.

The simulator computes the same summaries under the history's own conditions
(production days, lever plans; faults drawn at their catalogue rates) with the
numba kernel, so only the physics differs between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulators.definition import Process

__all__ = ["CalibrationError", "History", "SummaryLayout", "summarise_history", "batch_means"]

#: A lever counts as moved in the history when at least this many batches used
#: another value than nominal; fewer make a slope that is mostly noise.
MIN_MOVED = 5
#: A moved lever also gets a curvature (its squared deviation) when this many
#: batches moved it to at least three distinct values: the temper's and the stress
#: relief's responses are exponential, and only the curvature tells their
#: temperature scale from their size.
MIN_CURVED = 20


#: Roles left out of the summaries: a crack is a rare 0/1 event per bar, whose
#: batch means and slopes are far from the normal noise the likelihood assumes,
#: and no uncertain parameter acts mainly on it.
_NOT_SUMMARISED = {"crack"}


class CalibrationError(ValueError):
    """The history cannot calibrate this process (other structure, nothing to learn from)."""


@dataclass(frozen=True)
class History:
    """The complete batches of a history, reduced to what calibration uses.

    Attributes
    ----------
    batch_ids : ndarray of str (B,)
    mean : ndarray (B, n_insp, n_chars)
        Sample mean of the gauged bars, in the process's units; NaN where the
        inspection does not gauge the characteristic.
    levers : ndarray (B, n_levers)
        Lever values used, in the levers' units.
    day : ndarray (B,)
        Production day.
    dropped : int
        Batches left out because an inspection's reading is missing (still in
        production, or a lost record).
    """

    batch_ids: np.ndarray
    mean: np.ndarray
    levers: np.ndarray
    day: np.ndarray
    dropped: int = 0

    @property
    def n_batches(self) -> int:
        return len(self.batch_ids)


def summarise_history(df: pd.DataFrame, process: Process, *, since: float | None = None) -> History:
    """Check the history's structure against ``process`` and reduce it.

    The check is on structure, not on the file's digest: every row must fit the
    process's steps, factories, characteristics, units and levers, every
    inspection must gauge what the process says it gauges, and every lever
    must have values. A plant runs the file's structure with its own physics.

    Parameters
    ----------
    df : DataFrame
        Step data in the schema of ``simulators.schema``.
    process : Process
    since : float, optional
        Keep only batches of production day ``>= since`` (a recent window).

    Returns
    -------
    History

    Raises
    ------
    CalibrationError
        The structure differs (the message names the first rows, or the
        inspection and characteristic, or the lever), or no complete batch is left.
    """
    from recovery.causal.model import DataError, summarise

    try:
        s = summarise(df, process, validate=True)
    except DataError as exc:
        raise CalibrationError(f"the history does not have the structure of process "
                               f"'{process.name}': {exc}") from None
    if s.ignored_rows:
        raise CalibrationError(f"the history has {s.ignored_rows} measurement row(s) at steps that "
                               f"are not inspections of process '{process.name}'")
    expected = process.arrays.insp_measures
    seen = (s.count > 0).any(axis=0)
    for q, ins in enumerate(process.inspections):
        for c, ch in enumerate(process.characteristics):
            if seen[q, c] and not expected[q, c]:
                raise CalibrationError(f"the history gauges '{ch.name}' at step {ins.step}, which "
                                       f"process '{process.name}' does not measure there")
            if expected[q, c] and not seen[q, c]:
                raise CalibrationError(f"the history has no reading of '{ch.name}' at inspection "
                                       f"step {ins.step} of process '{process.name}'")
    for j, lv in enumerate(process.levers):
        if not s.lever_seen[:, j].any():
            raise CalibrationError(f"the history has no value of lever '{lv.name}' (step {lv.step}) "
                                   f"of process '{process.name}'")
    complete = (s.count > 0)[:, expected].all(axis=1)
    keep = complete & (s.day >= since if since is not None else True)
    if not keep.any():
        window = f" from production day {since:g} on" if since is not None else ""
        raise CalibrationError(f"the history has no complete batch{window} "
                               f"({s.n_batches} batches, {int(complete.sum())} complete)")
    return History(np.asarray(s.batch_ids)[keep], s.mean[keep], s.levers[keep], s.day[keep],
                   dropped=int((~complete).sum()))


def batch_means(obs: np.ndarray, process: Process) -> np.ndarray:
    """Sample means ``(B, n_insp, n_chars)`` of simulated gauge readings ``obs``."""
    out = np.full(obs.shape[:2] + obs.shape[3:], np.nan)
    for q, ins in enumerate(process.inspections):
        out[:, q, :] = obs[:, q, :ins.sample, :].mean(axis=1)
    return out


@dataclass(frozen=True)
class SummaryLayout:
    """Which summaries there are, and how batch means and levers become them.

    Attributes
    ----------
    pairs : list of (q, c)
        Inspection number and characteristic column of each feature.
    prev : ndarray of int (n_features,)
        Feature index of the previous inspection gauging the same
        characteristic, or -1 (the feature is a level).
    moved : ndarray of int
        Lever columns moved in the history (regressors).
    scale : ndarray (n_moved,)
        Lever deviation that counts as one unit (half the lever's effective range).
    curved : ndarray of int
        Positions in ``moved`` of the levers that also get a squared term.
    names : list of str
        Human-readable name of each summary.
    slope_mask : ndarray of bool (n_moved + n_curved, n_features)
        Which slopes and curvatures are summaries (lever step before the inspection).
    """

    pairs: list
    prev: np.ndarray
    moved: np.ndarray
    nominal: np.ndarray
    scale: np.ndarray
    curved: np.ndarray
    names: list
    slope_mask: np.ndarray

    @classmethod
    def build(cls, process: Process, levers: np.ndarray) -> "SummaryLayout":
        """SummaryLayout for ``process`` given the history's lever values ``(B, n_levers)``."""
        pairs, prev, last = [], [], {}
        for q, ins in enumerate(process.inspections):
            for name in ins.measures:
                c = process.char_index[name]
                if process.characteristics[c].role in _NOT_SUMMARISED:
                    continue
                prev.append(last.get(c, -1))
                last[c] = len(pairs)
                pairs.append((q, c))
        nominal = process.nominal_plan()
        n_moved = (np.abs(levers - nominal) > 1e-9).sum(axis=0)
        moved = np.flatnonzero(n_moved >= MIN_MOVED)
        lo, hi = process.lever_bounds()
        scale = np.maximum((hi - lo)[moved] / 2.0, 1e-12)
        insp_step = np.array([process.inspections[q].step for q, _ in pairs])
        lever_step = np.array([process.levers[j].step for j in moved], dtype=np.int64)
        dev = np.abs(levers[:, moved] - nominal[moved]) > 1e-9
        curved = np.array([i for i, j in enumerate(moved) if dev[:, i].sum() >= MIN_CURVED
                           and len(np.unique(levers[dev[:, i], j])) >= 3], dtype=np.int64)
        mask = lever_step[:, None] < insp_step[None, :]
        mask = np.vstack([mask, mask[curved]]) if len(curved) else mask

        def pname(f):
            q, c = pairs[f]
            what = "level" if prev[f] < 0 else "change"
            return f"{process.characteristics[c].name}@{process.inspections[q].step} {what}"

        names = [pname(f) + " at nominal" for f in range(len(pairs))]
        rows = [f"per {process.levers[j].name}" for j in moved]
        rows += [f"curvature in {process.levers[moved[i]].name}" for i in curved]
        for i, what in enumerate(rows):
            names += [pname(f) + " " + what for f in np.flatnonzero(mask[i])]
        return cls(pairs, np.array(prev, dtype=np.int64), moved, nominal[moved], scale, curved,
                   names, mask)

    @property
    def n_features(self) -> int:
        return len(self.pairs)

    @property
    def n_summaries(self) -> int:
        return self.n_features + int(self.slope_mask.sum())

    def features(self, mean: np.ndarray) -> np.ndarray:
        """Per-batch features ``(B, n_features)`` from batch means ``(B, n_insp, n_chars)``."""
        q = np.array([p[0] for p in self.pairs])
        c = np.array([p[1] for p in self.pairs])
        y = mean[:, q, c]
        has = self.prev >= 0
        y[:, has] = y[:, has] - y[:, self.prev[has]]
        return y

    def design(self, levers: np.ndarray) -> np.ndarray:
        """Regressors ``(B, 1 + n_moved + n_curved)``: intercept, scaled lever
        deviations, squares of the curved ones."""
        x = (levers[:, self.moved] - self.nominal) / self.scale
        return np.column_stack([np.ones(len(levers)), x, x[:, self.curved] ** 2])

    def summaries(self, features: np.ndarray, design: np.ndarray) -> np.ndarray:
        """The summary vector: least-squares intercepts, then the kept slopes."""
        coef, *_ = np.linalg.lstsq(design, features, rcond=None)
        return np.concatenate([coef[0], coef[1:][self.slope_mask]])

    def bootstrap(self, features: np.ndarray, design: np.ndarray, n: int,
                  rng: np.random.Generator) -> np.ndarray:
        """``n`` bootstrap replicates ``(n, n_summaries)`` of :meth:`summaries` (batches resampled)."""
        b = len(features)
        out = np.empty((n, self.n_summaries))
        for i in range(n):
            idx = rng.integers(0, b, b)
            out[i] = self.summaries(features[idx], design[idx])
        return out
