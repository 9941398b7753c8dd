"""The Bayesian causal process model: a PyMC estimator over the causal graph.

What is modelled (details and the reasons in ``docs/causal-model.md``)
---------------------------------------------------------------------
Data are reduced to per-batch summaries: at each inspection ``q`` and for each
gauged characteristic, the sample mean and sample variance of the gauged bars;
the lever values; the production day. The fit does not grow with bars.

The hidden state is the batch-mean vector of the continuous characteristics at
each inspection, in standardised units (``(x - centre) / scale``). Between
inspections ``q-1`` and ``q`` (a *segment*)::

    delta_q = A_q delta_{q-1} + B_q phi(levers) + Gamma_q * (day - day_ref) / 100 + w_q
    w_q ~ N(0, diag(tau_q^2))                 (+ a fault shift, see below)
    mean of bars gauged at q = m_q + delta_q + e_q
    e_q ~ N(0, sigma_bar^2 (1/n - 1/N) + gauge_sigma^2 / n)

``A_q`` and ``B_q`` are sparse with the support the causal graph gives;
``phi`` holds each lever's deviation from nominal and its square (lever
effects are not linear in the physics). ``Gamma_q`` is the factory drift per
100 production days, pooled hierarchically: each factory's drift is its
partner's drift plus its own deviation. Partner offsets are constant per step
and absorbed in ``m_q``.

Hidden steps are integrated out exactly: a batch's gauged means are jointly
Gaussian with one covariance shared by every batch with the same inspection
pattern (only the means differ, by levers and day), so one Cholesky factor per
pattern per log-density evaluation is all it costs.

Robustness: historical batches hold faults (large shifts). Segment ``r`` of
a batch carries a *fault shift* with probability ``pi_r`` (shift
``~ N(0, diag(tau_fault_r^2))``), independently; the mixture has one component
with no shift, one per segment with exactly one shift (a Woodbury update of
the shared factor), and one for two shifts or more, with a shift in every
segment (its own factor). Without that last component the few batches with
two faults (5% at the default process's rates) are explained by the batch
noise ``tau``, which then came out twice its true size (bend angle 0.16 deg
against 0.08). Sample variances get a two-component
(normal / inflated) chi-square likelihood for the same reason. No batch is
dropped.

Crack (a 0/1 characteristic) is modelled apart: the share of cracked bars per
batch and the per-segment rate and size of new cracking (conjugate Beta).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from recovery.causal import _filter
from recovery.causal.graph import CausalGraph, ExpertEdits, Segment, load_edits
from simulators.definition import Process, load_process, parse_process

__all__ = [
    "CausalModel", "FitConfig", "PriorConfig", "Summaries", "summarise", "DataError",
    "ModelLoadError", "Params", "Layout", "Standardisation", "CrackModel", "FitReport",
    "MODEL_FORMAT",
]

MODEL_FORMAT = 3


class DataError(ValueError):
    """Step data do not fit the model's process, or hold nothing to learn from."""


class ModelLoadError(ValueError):
    """A model directory is missing, incomplete or from an incompatible version."""


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FitConfig:
    """How to fit.

    Attributes
    ----------
    method : {"nuts", "advi"}
        NUTS (exact, with diagnostics) or mean-field ADVI (fast, approximate).
    sampler : {"auto", "nutpie", "pymc"}
        NUTS implementation; ``auto`` uses nutpie when it is installed.
    draws, tune, chains : int
        Per chain, for NUTS. ``draws`` is also the number of ADVI draws.
    advi_steps : int
        Optimisation steps for ADVI (it stops earlier once the parameters settle).
    advi_learning_rate : float
        Adam step size for ADVI.
    seed : int
    keep_draws : int
        Posterior draws kept for queries (thinned evenly); queries cost grows with it.
    robust : {"sandwich", "none"}
        ``sandwich`` (default) widens the posterior where the batches disagree
        with the model more than the model expects (:func:`robust_adjust`); the
        sampler's own draws stay in ``idata_`` as ``theta`` and the adjusted ones
        are ``theta_robust``. ``none`` keeps the sampler's draws.
    """

    method: Literal["nuts", "advi"] = "nuts"
    sampler: Literal["auto", "nutpie", "pymc"] = "auto"
    draws: int = 500
    tune: int = 500
    chains: int = 2
    advi_steps: int = 20_000
    advi_learning_rate: float = 0.02
    seed: int = 0
    keep_draws: int = 1000
    robust: Literal["sandwich", "none"] = "sandwich"


@dataclass(frozen=True)
class PriorConfig:
    """Default priors, in standardised units (a characteristic's typical
    batch-to-batch spread is 1). Parameters on the log scale are noted.

    Order of priority: an expert ``[[prior]]`` replaces the default for its
    parameter; :meth:`CausalModel.update` replaces all of them with the previous
    posterior.
    """

    mean_sd: float = 2.0
    carry_self: tuple[float, float] = (1.0, 0.5)
    carry_cross: tuple[float, float] = (0.0, 1.0)
    lever_sd: float = 5.0
    log_noise: tuple[float, float] = (math.log(0.5), 1.0)
    log_drift_scale: tuple[float, float] = (math.log(0.3), 0.7)
    drift_base_sd: float = 3.0
    fault_rate_floor: float = 0.01
    logit_fault_rate_sd: float = 1.0
    log_fault_scale: tuple[float, float] = (math.log(5.0), 1.0)
    spread_trim: float = 0.999


# ---------------------------------------------------------------------------
# Data reduction
# ---------------------------------------------------------------------------

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
    kind = df["kind"].astype(str).to_numpy()
    var = df["variable"].astype(str).to_numpy()
    val = df["value"].to_numpy(dtype=np.float64, na_value=np.nan)

    meas = kind == "measurement"
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
    lev = kind == "lever"
    if lev.any() and nl:
        li = pd.Series(var[lev]).map(dict(process.lever_index)).to_numpy(dtype=float, na_value=-1)
        ok = li >= 0
        levers[batch_codes[lev][ok], li[ok].astype(np.int64)] = val[lev][ok]
        seen[batch_codes[lev][ok], li[ok].astype(np.int64)] = True

    day = np.full(nb, np.nan)
    ctx = (kind == "context") & (var == "season_day")
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


# ---------------------------------------------------------------------------
# Standardisation and the parameter layout
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Standardisation:
    """Maps physical units to the model's standardised units.

    Attributes
    ----------
    centre : ndarray (n_insp, d)
        Median of the training sample means per gauged pair (0 elsewhere).
    scale : ndarray (d,)
        Typical batch-to-batch spread of each modelled characteristic (robust).
    lever_nominal, lever_half : ndarray (n_levers,)
        ``x = (value - nominal) / half``; ``half`` is the larger distance from
        nominal to an effective bound.
    lever_gamma : ndarray (n_levers,)
        The features are ``x - gamma x**2`` and ``x**2``: both vanish at nominal,
        the first has slope 1 there and the second slope 0 (so the first
        coefficient *is* the slope at nominal), and ``gamma`` makes them
        orthogonal over the lever's range. Without it a lever whose nominal
        sits at a bound (re-chroming time 0) has two nearly collinear features
        and the sampler crawls along their ridge.
    day_ref : float
        Production day at which ``m_q`` is the mean.
    """

    centre: np.ndarray
    scale: np.ndarray
    lever_nominal: np.ndarray
    lever_half: np.ndarray
    lever_gamma: np.ndarray
    day_ref: float

    def features(self, levers: np.ndarray) -> np.ndarray:
        """Lever features ``[x - gamma x**2, x**2]``, shape ``(..., 2 * n_levers)``."""
        x = (np.asarray(levers, dtype=np.float64) - self.lever_nominal) / self.lever_half
        return np.concatenate([x - self.lever_gamma * x * x, x * x], axis=-1)

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardisation":
        return cls(np.asarray(d["centre"], float), np.asarray(d["scale"], float),
                   np.asarray(d["lever_nominal"], float), np.asarray(d["lever_half"], float),
                   np.asarray(d["lever_gamma"], float), float(d["day_ref"]))


def standardise(summ: Summaries, graph: CausalGraph) -> Standardisation:
    p = graph.process
    mod = [p.char_index[c] for c in graph.modeled]
    mean = summ.mean[:, :, mod]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # never-gauged pairs are all NaN
        centre = np.nan_to_num(np.nanmedian(mean, axis=0) if summ.n_batches
                               else np.zeros(mean.shape[1:]), nan=0.0)
    scale = np.zeros(len(mod))
    for i, ci in enumerate(mod):
        sds = []
        for q in range(mean.shape[1]):
            col = mean[:, q, i]
            col = col[np.isfinite(col)]
            if len(col) >= 5:
                mad = 1.4826 * np.median(np.abs(col - np.median(col)))
                if mad > 0:
                    sds.append(mad)
        g = p.characteristics[ci].gauge_sigma
        scale[i] = np.median(sds) if sds else (g if g > 0 else 1.0)
    lo, hi = p.lever_bounds()
    nom = p.nominal_plan()
    half = np.maximum(np.maximum(hi - nom, nom - lo), 1e-9)
    a, b = (lo - nom) / half, (hi - nom) / half
    gamma = np.where(b - a > 0, ((b**4 - a**4) / 4) / np.maximum((b**5 - a**5) / 5, 1e-12), 0.0)
    return Standardisation(centre, scale, nom, half, gamma,
                           float(np.mean(summ.day)) if summ.n_batches else 0.0)


@dataclass(frozen=True)
class Params:
    """Decoded parameters, one row per posterior draw (standardised units).

    Attributes
    ----------
    A : (S, Q, d, d)      carry-over from the previous inspection
    B : (S, Q, d, F)      lever-feature effects
    G : (S, Q, d)         factory drift per 100 production days
    tau : (S, Q, d)       process-noise sd
    m : (S, Q, d)         mean at nominal levers and ``day_ref`` (gauged pairs)
    sbar : (S, Q, d)      bar-to-bar sd within a batch (gauged pairs)
    pi : (S, Q)           probability of a fault shift in the segment
    tauf : (S, Q, d)      sd of a fault shift
    """

    A: np.ndarray
    B: np.ndarray
    G: np.ndarray
    tau: np.ndarray
    m: np.ndarray
    sbar: np.ndarray
    pi: np.ndarray
    tauf: np.ndarray

    @property
    def n_draws(self) -> int:
        return self.A.shape[0]

    def take(self, idx) -> "Params":
        return Params(*(getattr(self, f)[idx] for f in ("A", "B", "G", "tau", "m", "sbar", "pi", "tauf")))


class Layout:
    """Where each mechanism parameter sits in the flat parameter vector ``theta``.

    Every parameter is unconstrained (scales on the log scale, rates on the
    logit scale) with an independent normal default prior, so that
    :meth:`CausalModel.update` can replace the whole prior by a moment-matched
    multivariate normal.
    """

    def __init__(self, graph: CausalGraph, std: Standardisation, priors: PriorConfig,
                 fault_prior_rate: np.ndarray):
        p = graph.process
        self.graph = graph
        segs = graph.segments()
        Q, d, L = len(segs), len(graph.modeled), len(p.levers)
        F = 2 * L
        self.Q, self.d, self.L, self.F = Q, d, L, F
        mi = graph.modeled_index
        gauged = np.zeros((Q, d), dtype=bool)
        for q, ins in enumerate(p.inspections):
            for cname in ins.measures:
                if cname in mi:
                    gauged[q, mi[cname]] = True
        rel = np.zeros((Q, d), dtype=bool)
        rel[Q - 1] = gauged[Q - 1]
        for q in range(Q - 2, -1, -1):
            rel[q] = gauged[q] | (segs[q + 1].carry[rel[q + 1]].any(axis=0))
        self.gauged, self.relevant = gauged, rel
        segs = self._defer(segs, gauged, rel)
        self.segments = segs
        names: list[str] = []
        mu: list[float] = []
        sd: list[float] = []
        cn = graph.modeled
        insp = p.inspection_steps

        def add(label: str, m_: float, s_: float) -> int:
            names.append(label)
            mu.append(m_)
            sd.append(s_)
            return len(names) - 1

        # m_q: mean of each gauged pair
        self.mean_q, self.mean_c, self.mean_i = [], [], []
        for q in range(Q):
            for c in np.flatnonzero(gauged[q]):
                self.mean_q.append(q)
                self.mean_c.append(c)
                self.mean_i.append(add(f"mean[{insp[q]},{cn[c]}]", 0.0, priors.mean_sd))
        # A_q: carry-over entries learned where the segment acts on a relevant characteristic
        self.carry_fixed = np.zeros((Q, d, d))
        self.carry_q, self.carry_c, self.carry_c2, self.carry_i = [], [], [], []
        for q, seg in enumerate(segs):
            for c in range(d):
                if not seg.acted[c]:
                    self.carry_fixed[q, c, c] = 1.0
                    continue
                if q == 0 or not rel[q, c]:
                    continue
                for c2 in np.flatnonzero(seg.carry[c]):
                    m0, s0 = priors.carry_self if c2 == c else priors.carry_cross
                    self.carry_q.append(q)
                    self.carry_c.append(c)
                    self.carry_c2.append(c2)
                    lab = f"carry[{insp[q]},{cn[c2]}->{cn[c]}]"
                    self.carry_i.append(add(lab, m0, s0))
        # B_q: lever effects (linear and quadratic feature of the deviation from nominal)
        self.lever_q, self.lever_c, self.lever_f, self.lever_i = [], [], [], []
        for q, seg in enumerate(segs):
            for c in range(d):
                if not (seg.acted[c] and rel[q, c]):
                    continue
                for j in np.flatnonzero(seg.levers[c]):
                    for power, off in (("lin", 0), ("quad", L)):
                        self.lever_q.append(q)
                        self.lever_c.append(c)
                        self.lever_f.append(j + off)
                        self.lever_i.append(add(f"lever_{power}[{p.levers[j].name}->{cn[c]}@{insp[q]}]",
                                                0.0, priors.lever_sd))
        # tau_q: process noise
        self.noise_q, self.noise_c, self.noise_i = [], [], []
        for q, seg in enumerate(segs):
            for c in np.flatnonzero(seg.acted & rel[q]):
                self.noise_q.append(q)
                self.noise_c.append(c)
                self.noise_i.append(add(f"log_noise[{insp[q]},{cn[c]}]", *priors.log_noise))
        # drift: one slope per (factory, characteristic), partially pooled across
        # factories (centred: the data pin each slope down well).
        pairs: list[tuple[int, int]] = []
        for q, seg in enumerate(segs):
            for f, c in zip(*np.nonzero(seg.drift)):
                if seg.acted[c] and rel[q, c] and (f, c) not in pairs:
                    pairs.append((int(f), int(c)))
        self.drift_i = [add(f"drift[{p.factories[f].id},{cn[c]}]", 0.0, priors.drift_base_sd)
                        for f, c in pairs]
        self.drift_scale_i = add("log_drift_sd", *priors.log_drift_scale) if pairs else None
        self.drift_map = np.zeros((len(pairs), Q * d))
        for k, (f, c) in enumerate(pairs):
            for q, seg in enumerate(segs):
                if seg.drift[f, c] and seg.acted[c] and rel[q, c]:
                    self.drift_map[k, q * d + c] = 1.0
        self.drift_pairs = pairs
        # fault mixture
        self.rate_q, self.rate_i = [], []
        for q, seg in enumerate(segs):
            if (seg.acted & rel[q]).any():
                r = max(float(fault_prior_rate[q]), priors.fault_rate_floor)
                self.rate_q.append(q)
                self.rate_i.append(add(f"logit_fault_rate[{insp[q]}]", math.log(r / (1 - r)),
                                       priors.logit_fault_rate_sd))
        self.fscale_q, self.fscale_c, self.fscale_i = [], [], []
        for q in self.rate_q:
            for c in np.flatnonzero(segs[q].acted & rel[q]):
                self.fscale_q.append(q)
                self.fscale_c.append(c)
                self.fscale_i.append(add(f"log_fault_sd[{insp[q]},{cn[c]}]", *priors.log_fault_scale))
        self.names = names
        self.prior_mu = np.array(mu)
        self.prior_sd = np.array(sd)
        for attr in list(vars(self)):
            if attr.endswith(("_q", "_c", "_c2", "_f", "_i")) and isinstance(getattr(self, attr), list):
                setattr(self, attr, np.asarray(getattr(self, attr), dtype=np.int64))
        self._apply_expert_priors(graph, std)

    @property
    def size(self) -> int:
        return len(self.names)

    @staticmethod
    def _defer(segs, gauged, rel):
        """Move a characteristic's change in a segment into the next one when it is
        not gauged at the segment's end and nothing else reads it there.

        Between two gauges of a characteristic, only the whole change is
        identifiable: splitting it into two carry-over coefficients and two
        noises leaves a ridge the sampler crawls along. The characteristic then
        passes through the first segment unchanged and the second learns the
        combined change (its levers, drift and noise included): the second
        segment acts on it even when its own steps do not, and when the first
        segment sets the characteristic afresh (a cut to length) so does the
        combined change (no carry-over from before).
        """
        segs = [replace(sg, acted=sg.acted.copy(), carry=sg.carry.copy(), levers=sg.levers.copy(),
                        drift=sg.drift.copy()) for sg in segs]
        for q in range(len(segs) - 1):
            cur, nxt = segs[q], segs[q + 1]
            for c in range(len(cur.acted)):
                if not (cur.acted[c] and rel[q, c]) or gauged[q, c]:
                    continue
                if set(np.flatnonzero(cur.carry[c])) - {c} or not nxt.carry[c, c]:
                    continue
                if set(np.flatnonzero(nxt.carry[:, c])) - {c}:
                    continue
                nxt.acted[c] = True
                nxt.carry[c, c] = cur.carry[c, c]
                cur.acted[c] = False
                cur.carry[c] = False
                cur.carry[c, c] = True
                nxt.levers[c] |= cur.levers[c]
                cur.levers[c] = False
                nxt.drift[:, c] |= cur.drift[:, c]
                cur.drift[:, c] = False
        return segs

    def _apply_expert_priors(self, graph: CausalGraph, std: Standardisation) -> None:
        p = graph.process
        mi = graph.modeled_index
        self.expert: list[tuple[int, float, str]] = []  # (index, std -> physical factor, label)
        self.expert_notes: list[str] = []
        for pr in graph.edits.priors:
            c = mi[pr.target]
            if pr.lever is not None:
                j = p.lever_index[pr.lever]
                q = graph.segment_of_step(p.levers[j].step)
                # the effect may have been moved to a later segment (see _defer)
                hit = np.flatnonzero((self.lever_q >= q) & (self.lever_c == c) & (self.lever_f == j))
                # slope per lever unit at nominal -> coefficient of x = (u - nom) / half
                to_std = std.lever_half[j] / std.scale[c]
            else:
                q = p.inspection_steps.index(pr.inspection)
                c2 = mi[pr.source]
                hit = np.flatnonzero((self.carry_q == q) & (self.carry_c == c) & (self.carry_c2 == c2))
                to_std = std.scale[c2] / std.scale[c]
            if not len(hit):
                self.expert_notes.append(
                    f"prior on {pr.label} NOT USED: {pr.target} is not gauged at the end of that "
                    "segment, so the model learns its change up to the next gauge as one "
                    "coefficient; put the prior on that segment instead")
                continue
            k = int(self.lever_i[hit[0]] if pr.lever is not None else self.carry_i[hit[0]])
            self.prior_mu[k] = pr.mean * to_std
            self.prior_sd[k] = pr.sd * abs(to_std)
            self.expert.append((k, 1.0 / to_std, pr.label))

    # ---- decoding ----------------------------------------------------------
    def decode(self, theta: np.ndarray) -> Params:
        """Decode draws ``theta (S, P)`` into :class:`Params` (NumPy)."""
        th = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        S, Q, d, F = th.shape[0], self.Q, self.d, self.F
        m = np.zeros((S, Q, d))
        m[:, self.mean_q, self.mean_c] = th[:, self.mean_i]
        A = np.broadcast_to(self.carry_fixed, (S, Q, d, d)).copy()
        A[:, self.carry_q, self.carry_c, self.carry_c2] = th[:, self.carry_i]
        B = np.zeros((S, Q, d, F))
        B[:, self.lever_q, self.lever_c, self.lever_f] = th[:, self.lever_i]
        tau = np.zeros((S, Q, d))
        tau[:, self.noise_q, self.noise_c] = np.exp(th[:, self.noise_i])
        G = np.zeros((S, Q * d))
        if len(self.drift_pairs):
            G = th[:, self.drift_i] @ self.drift_map
        sbar = np.zeros((S, Q, d))  # filled in from the spread model by the caller
        pi = np.zeros((S, Q))
        pi[:, self.rate_q] = 1.0 / (1.0 + np.exp(-th[:, self.rate_i]))
        tauf = np.zeros((S, Q, d))
        tauf[:, self.fscale_q, self.fscale_c] = np.exp(th[:, self.fscale_i])
        return Params(A, B, G.reshape(S, Q, d), tau, m, sbar, pi, tauf)

    def decode_tensor(self, theta):
        """Decode a symbolic ``theta (P,)`` (PyTensor) into a dict of tensors."""
        import pytensor.tensor as pt

        Q, d, F = self.Q, self.d, self.F

        def put(shape, idx, values, base=None):
            z = pt.zeros(shape) if base is None else pt.as_tensor_variable(base)
            return pt.set_subtensor(z[idx], values) if idx[0].size else z

        m = put((Q, d), (self.mean_q, self.mean_c), theta[self.mean_i])
        A = put((Q, d, d), (self.carry_q, self.carry_c, self.carry_c2), theta[self.carry_i],
                base=self.carry_fixed)
        B = put((Q, d, F), (self.lever_q, self.lever_c, self.lever_f), theta[self.lever_i])
        tau = put((Q, d), (self.noise_q, self.noise_c), pt.exp(theta[self.noise_i]))
        if len(self.drift_pairs):
            G = pt.dot(theta[self.drift_i], self.drift_map).reshape((Q, d))
        else:
            G = pt.zeros((Q, d))
        pi = put((Q,), (self.rate_q,), pt.sigmoid(theta[self.rate_i]))
        tauf = put((Q, d), (self.fscale_q, self.fscale_c), pt.exp(theta[self.fscale_i]))
        return dict(A=A, B=B, G=G, tau=tau, m=m, pi=pi, tauf=tauf)

    def to_dict(self) -> dict:
        return {"names": self.names, "prior_mu": self.prior_mu.tolist(), "prior_sd": self.prior_sd.tolist()}


# ---------------------------------------------------------------------------
# Fit-time data in the model's units
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _FitData:
    """Standardised training summaries grouped by inspection pattern."""

    rows: np.ndarray             # (D, 2) (q, c) of each gauged pair, in order
    n_sample: np.ndarray         # (D,) bars gauged per batch (nominal)
    gauge: np.ndarray            # (D,) gauge sd, standardised
    patterns: list               # [(obs index (Dp,), Z (Bp, Dp), zeta (Bp, F+1))]
    R: np.ndarray                # (D,) variance of a sample mean, standardised
    excluded: int                # batches in inspection patterns too rare to fit


def _fit_data(summ: Summaries, graph: CausalGraph, std: Standardisation, layout: Layout,
              spread: "BarSpread", *, min_pattern: int = 3) -> _FitData:
    p = graph.process
    mod = np.array([p.char_index[c] for c in graph.modeled])
    rows = np.array([(q, c) for q in range(layout.Q) for c in np.flatnonzero(layout.gauged[q])])
    q_, c_ = rows[:, 0], rows[:, 1]
    Z = (summ.mean[:, q_, mod[c_]] - std.centre[q_, c_]) / std.scale[c_]
    n_sample = np.array([p.inspections[q].sample for q in q_], dtype=float)
    gauge = np.array([p.characteristics[mod[c]].gauge_sigma for c in c_]) / std.scale[c_]
    t = (summ.day - std.day_ref) / 100.0
    zeta = np.concatenate([std.features(summ.levers), t[:, None]], axis=1)
    obs = np.isfinite(Z)
    keys, inv, counts = np.unique(obs, axis=0, return_inverse=True, return_counts=True)
    patterns, excluded = [], 0
    for k, key in enumerate(keys):
        sel = np.flatnonzero(inv.reshape(-1) == k)
        if not key.any():
            continue
        if counts[k] < min_pattern:
            excluded += len(sel)
            continue
        idx = np.flatnonzero(key)
        patterns.append((idx, Z[np.ix_(sel, idx)], zeta[sel]))
    sbar = spread.mean_sd()[q_, c_] / std.scale[c_]
    R = sbar**2 * (1.0 / n_sample - 1.0 / p.bars_per_batch) + gauge**2 / n_sample
    return _FitData(rows, n_sample, gauge, patterns, R, excluded)


def _loglik_tensor(P: dict, fd: _FitData, layout: Layout, bars: int, *, per_batch: bool = False):
    """Log-likelihood of the training summaries (PyTensor), hidden steps integrated out.

    The total, or with ``per_batch`` each batch's term (batches in the order of
    ``fd.patterns``).
    """
    import pytensor.tensor as pt
    from pytensor.tensor.slinalg import cholesky, solve_triangular

    Q, d = layout.Q, layout.d
    A, B, G, tau, m = P["A"], P["B"], P["G"], P["tau"], P["m"]
    pi, tauf = P["pi"], P["tauf"]
    q_, c_ = fd.rows[:, 0], fd.rows[:, 1]
    eye = pt.eye(d)
    # K_q: response of delta_q to the per-batch features [phi, t]
    K, prev = [], None
    for q in range(Q):
        inj = pt.concatenate([B[q], G[q][:, None]], axis=1)
        prev = inj if prev is None else pt.dot(A[q], prev) + inj
        K.append(prev)
    # Lam[q][r]: response of delta_q to the noise of segment r
    Lam = [[None] * Q for _ in range(Q)]
    for r in range(Q):
        Lam[r][r] = eye
        for q in range(r + 1, Q):
            Lam[q][r] = pt.dot(A[q], Lam[q - 1][r])
    blocks_q = [np.flatnonzero(q_ == q) for q in range(Q)]
    Kobs = pt.concatenate([K[q][c_[blocks_q[q]]] for q in range(Q) if len(blocks_q[q])], axis=0)
    mvec = m[q_, c_]
    D = len(q_)

    def loading(r):
        parts = []
        for q in range(Q):
            if not len(blocks_q[q]):
                continue
            parts.append(Lam[q][r][c_[blocks_q[q]]] if q >= r else pt.zeros((len(blocks_q[q]), d)))
        return pt.concatenate(parts, axis=0)

    Gl = [loading(r) for r in range(Q)]
    Sigma = pt.diag(fd.R)
    for r in range(Q):
        Sigma = Sigma + pt.dot(Gl[r] * tau[r] ** 2, Gl[r].T)
    # The fault-shift mixture (``_filter.component_log_weights``): none, one
    # shift in segment q, or two or more (a shift in every fault segment).
    fault_q = [int(q) for q in layout.rate_q]
    log1m = pt.log1p(-pi)
    lw0 = pt.sum(log1m[fault_q]) if fault_q else pt.as_tensor_variable(0.0)
    lw = [lw0] + [lw0 - log1m[q] + pt.log(pi[q]) for q in fault_q]
    several = len(fault_q) >= 2
    if several:
        lw.append(pt.log(pt.maximum(1.0 - pt.exp(pt.logsumexp(pt.stack(lw))), 1e-300)))
    total, terms = 0.0, []
    for idx, Zp, zeta in fd.patterns:
        Sp = Sigma[idx][:, idx]
        L = cholesky(Sp)
        resid = pt.as_tensor_variable(Zp) - (mvec[idx] + pt.dot(zeta, Kobs[idx].T))
        Rt = solve_triangular(L, resid.T, lower=True)
        quad0 = pt.sum(Rt**2, axis=0)
        logdet0 = 2.0 * pt.sum(pt.log(pt.diag(L)))
        comps = [lw[0] - 0.5 * (quad0 + logdet0)]
        for k, q in enumerate(fault_q):
            W = solve_triangular(L, (Gl[q] * tauf[q])[idx], lower=True)
            C = pt.eye(d) + pt.dot(W.T, W)
            Lc = cholesky(C)
            V = solve_triangular(Lc, pt.dot(W.T, Rt), lower=True)
            quad = quad0 - pt.sum(V**2, axis=0)
            comps.append(lw[k + 1] - 0.5 * (quad + logdet0 + 2.0 * pt.sum(pt.log(pt.diag(Lc)))))
        if several:
            U = pt.concatenate([(Gl[q] * tauf[q])[idx] for q in fault_q], axis=1)
            Ls = cholesky(Sp + pt.dot(U, U.T))
            Rs = solve_triangular(Ls, resid.T, lower=True)
            comps.append(lw[-1] - 0.5 * (pt.sum(Rs**2, axis=0) + 2.0 * pt.sum(pt.log(pt.diag(Ls)))))
        ll = pt.logsumexp(pt.stack(comps), axis=0) - 0.5 * len(idx) * math.log(2 * math.pi)
        terms.append(ll)
        total = total + pt.sum(ll)
    return pt.concatenate(terms) if per_batch else total


def _gaussian_parts(theta: np.ndarray, fd: _FitData, layout: Layout):
    """The fault-free Gaussian of the gauged means at one ``theta (P,)`` (NumPy).

    Returns ``(mean, K, Sigma, Gl)``: a batch's gauged means (rows ``fd.rows``)
    are ``N(mean + K @ zeta, Sigma)`` for its features ``zeta = [phi, t]``;
    ``Gl[r]`` is their loading on the noise of segment ``r`` (a fault shift in
    segment ``r`` adds ``Gl[r] @ (tauf[r] * z)``).
    """
    P = layout.decode(theta[None])
    A, B, G, tau, m = P.A[0], P.B[0], P.G[0], P.tau[0], P.m[0]
    Q, d = layout.Q, layout.d
    q_, c_ = fd.rows[:, 0], fd.rows[:, 1]
    K, prev = [], None
    for q in range(Q):
        inj = np.concatenate([B[q], G[q][:, None]], axis=1)
        prev = inj if prev is None else A[q] @ prev + inj
        K.append(prev)
    Kobs = np.stack([K[q][c] for q, c in zip(q_, c_)])
    Gl = np.zeros((Q, len(q_), d))
    for r in range(Q):
        lam = np.eye(d)
        for q in range(r, Q):
            if q > r:
                lam = A[q] @ lam
            rows = q_ == q
            Gl[r, rows] = lam[c_[rows]]
    Sigma = np.diag(fd.R) + np.einsum("rik,rk,rjk->ij", Gl, tau**2, Gl)
    return m[q_, c_], Kobs, Sigma, Gl


def _loglik_terms(theta: np.ndarray, fd: _FitData, layout: Layout) -> np.ndarray:
    """Each training batch's log-likelihood term at one ``theta (P,)`` (NumPy).

    The same quantity as ``_loglik_tensor(..., per_batch=True)`` (batches in the
    order of ``fd.patterns``), without a compile step: the robust adjustment
    evaluates it a few hundred times.
    """
    mvec, Kobs, Sigma, Gl = _gaussian_parts(theta, fd, layout)
    P = layout.decode(theta[None])
    pi, tauf, d = P.pi[0], P.tauf[0], layout.d
    fault_q = [int(q) for q in layout.rate_q]
    lw, codes = _filter.component_log_weights(pi, fault_q)
    several = codes[-1] == _filter.SEVERAL
    out = []
    for idx, Zp, zeta in fd.patterns:
        Sp = Sigma[np.ix_(idx, idx)]
        L = np.linalg.cholesky(Sp)
        resid = Zp - (mvec[idx] + zeta @ Kobs[idx].T)
        Rt = np.linalg.solve(L, resid.T)
        quad0 = (Rt**2).sum(axis=0)
        logdet0 = 2.0 * np.log(np.diag(L)).sum()
        comps = [lw[0] - 0.5 * (quad0 + logdet0)]
        for k, q in enumerate(fault_q):
            W = np.linalg.solve(L, (Gl[q] * tauf[q])[idx])
            Lc = np.linalg.cholesky(np.eye(d) + W.T @ W)
            V = np.linalg.solve(Lc, W.T @ Rt)
            comps.append(lw[k + 1] - 0.5 * (quad0 - (V**2).sum(axis=0) + logdet0
                                             + 2.0 * np.log(np.diag(Lc)).sum()))
        if several:
            U = np.concatenate([(Gl[q] * tauf[q])[idx] for q in fault_q], axis=1)
            Ls = np.linalg.cholesky(Sp + U @ U.T)
            Rs = np.linalg.solve(Ls, resid.T)
            comps.append(lw[-1] - 0.5 * ((Rs**2).sum(axis=0) + 2.0 * np.log(np.diag(Ls)).sum()))
        out.append(np.logaddexp.reduce(np.stack(comps), axis=0) - 0.5 * len(idx) * math.log(2 * math.pi))
    return np.concatenate(out)


def _prior_precision(layout: Layout, at: np.ndarray, prior) -> np.ndarray:
    """Precision (negative Hessian) of the fit's prior terms at ``at``: the
    independent normals plus the drift pooling, or an update's multivariate normal."""
    if prior is not None:
        return np.linalg.inv(prior[1])
    H = np.diag(1.0 / layout.prior_sd**2)
    if layout.drift_scale_i is not None:
        # pooling term sum_j (-s - kappa_j^2 exp(-2 s) / 2), s = log drift sd
        k, s = np.asarray(layout.drift_i), layout.drift_scale_i
        e = math.exp(-2.0 * at[s])
        H[k, k] += e
        H[k, s] -= 2.0 * at[k] * e
        H[s, k] -= 2.0 * at[k] * e
        H[s, s] += 2.0 * e * float(np.sum(at[k] ** 2))
    return H


def _scores(theta: np.ndarray, fd: _FitData, layout: Layout, step: np.ndarray) -> np.ndarray:
    """Each batch's score (gradient of its log-likelihood term) at ``theta``, by
    central differences with the given step per parameter: ``(n_batches, P)``."""
    out = None
    for k in range(len(theta)):
        e = np.zeros(len(theta))
        e[k] = step[k]
        col = (_loglik_terms(theta + e, fd, layout) - _loglik_terms(theta - e, fd, layout)) / (2.0 * step[k])
        if out is None:
            out = np.empty((len(col), len(theta)))
        out[:, k] = col
    return out


def _checked_start(logp_dlogp, start: np.ndarray, sd: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The point where NUTS chains start, checked before nutpie sees it.

    nutpie (nuts-rs up to at least 0.16) refuses a start where any component of
    the gradient is exactly zero ("All initialization points failed: bad initial
    gradient"), and after refusing it the process can die in nutpie's threads
    at exit (a segfault, exit 139). At the prior means the gradient is exactly
    zero for every parameter the data cannot inform, such as the effects of a
    lever the history never moved from nominal (its features are 0 in every
    batch; 300 batches of seed 3 on the default process never moved
    ``final_polish_passes``), or every parameter of an update the new batches
    say nothing about (the previous posterior's gradient is 0 at its mean).
    Those components start ``1e-3`` prior sd away from their mean: well inside
    the prior, which is their posterior anyway.

    Parameters
    ----------
    logp_dlogp : callable
        ``theta (P,) -> (logp, gradient (P,))``, the function the sampler uses.
    start : ndarray (P,)
        Intended start (the prior means).
    sd : ndarray (P,)
        Prior sd of each parameter (same units as ``theta``).
    names : list of str
        Parameter names, for the error message.

    Returns
    -------
    start : ndarray (P,)
        The start to use.
    moved : ndarray of int
        Parameters moved off their prior mean (zero gradient there).

    Raises
    ------
    DataError
        The log-density or its gradient is not finite at the start: the fit
        is refused instead of handing nutpie a point it cannot use.
    """
    start = np.array(start, dtype=np.float64)
    logp, grad = logp_dlogp(start)
    grad = np.asarray(grad, dtype=np.float64)
    moved = np.flatnonzero(grad == 0.0)
    if len(moved) and np.isfinite(logp):
        start[moved] += 1e-3 * np.asarray(sd, dtype=np.float64)[moved]
        logp, grad = logp_dlogp(start)
        grad = np.asarray(grad, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(grad) | (grad == 0.0))
    if not np.isfinite(logp) or len(bad):
        what = ", ".join(names[k] for k in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(
            "cannot start the fit: at the prior means "
            + (f"the log-density is {float(logp)}" if not np.isfinite(logp) else
               f"the gradient is not usable (not finite or zero) for {what}")
            + "; the step data give the model nothing it can evaluate there (check the "
              "history for constant or non-finite readings, or fit with --method advi)")
    return start, moved


def robust_adjust(theta: np.ndarray, fd: _FitData, layout: Layout, prior=None) -> tuple[np.ndarray, np.ndarray]:
    """Widen posterior draws for model misspecification (open-faced sandwich).

    The model is an approximation of the process (linear-Gaussian, additive
    levers), and with a thousand batches an approximation's posterior is
    narrower than the error it makes: it is exact only if the model is. The
    sandwich covariance ``Sigma (H_prior + J) Sigma`` replaces the posterior
    covariance ``Sigma`` where it is wider (it never narrows the posterior);
    ``J`` is the sum over batches of the outer products of each batch's score
    (gradient of its log-likelihood term, by central differences at the
    posterior mean) and ``H_prior`` the prior's precision. When the model is
    right ``J`` equals the likelihood's information and the draws do not move;
    where the batches disagree with the model more than it expects, the draws
    spread. Draws are mapped linearly about their mean
    (Shaby 2014, "The open-faced sandwich adjustment for MCMC using estimating
    functions"; Mueller 2013, "Risk of Bayesian inference in misspecified
    models, and the sandwich covariance matrix"), which keeps their shape
    (skew, heavy tails) and their correlations' structure. The interval then
    covers the best value the model can represent (the one nearest the truth
    in Kullback-Leibler divergence), not a truth it cannot represent.

    Parameters
    ----------
    theta : ndarray (S, P)
        Posterior draws.
    fd : _FitData
    layout : Layout
    prior : (mean, cov) or None
        An update's prior; ``None``: the layout's priors.

    Returns
    -------
    adjusted : ndarray (S, P)
    ratio : ndarray (P,)
        Adjusted over original posterior sd, per parameter.
    """
    mu = theta.mean(axis=0)
    Sig = np.cov(theta, rowvar=False)
    n = len(mu)
    S = _scores(mu, fd, layout, 1e-3 * np.sqrt(np.maximum(np.diag(Sig), 1e-24)))
    S = S - S.mean(axis=0)
    M = _prior_precision(layout, mu, prior) + S.T @ S
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    M = (V * np.maximum(w, 1e-9 * w.max())) @ V.T
    C = Sig @ M @ Sig
    # Widen, never narrow: relative to the posterior, keep the sandwich's
    # directions where it is wider and the posterior's where it is narrower
    # (there it rests on J's smallest directions, which a thousand scores in a
    # few hundred dimensions underestimate, or on the prior).
    jitter = 1e-12 * np.eye(n) * max(float(np.diag(Sig).max()), 1e-300)
    L0 = np.linalg.cholesky(Sig + jitter)
    L0i = np.linalg.inv(L0)
    lam, U = np.linalg.eigh(L0i @ (0.5 * (C + C.T)) @ L0i.T)
    omega = L0 @ (U * np.sqrt(np.maximum(lam, 1.0))) @ U.T @ L0i
    adjusted = mu + (theta - mu) @ omega.T
    cov = omega @ Sig @ omega.T
    return adjusted, np.sqrt(np.diag(cov) / np.diag(Sig))


# ---------------------------------------------------------------------------
# Bar-to-bar spread
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BarSpread:
    """Bar-to-bar spread within a batch at each gauged pair, from sample variances.

    Conjugate and apart from the MCMC: the sample variances are independent of
    the sample means for normal bars, and the spread barely informs the rest,
    so its posterior is computed in closed form (a scaled inverse chi-square
    on the total variance ``sigma_bar^2 + gauge^2``) and its mean is plugged
    into the mean model. Robustness: a batch whose sample variance exceeds the
    ``trim`` chi-square quantile of the robust (median-based) spread is left
    out of the spread estimate (its spread is a fault's, e.g. a distorted
    batch); the truncation is corrected for and the count reported.

    Attributes
    ----------
    nu : ndarray (Q, n_chars)
        Total degrees of freedom of the batches used.
    ss : ndarray (Q, n_chars)
        Their sum of ``(n - 1) * variance``, physical units squared.
    gauge : ndarray (n_chars,)
        Gauge sd.
    trimmed : int
        Batch readings left out.
    """

    nu: np.ndarray
    ss: np.ndarray
    gauge: np.ndarray
    trimmed: int = 0

    @classmethod
    def fit(cls, summ: Summaries, process: Process, trim: float = 0.999) -> "BarSpread":
        from scipy.stats import chi2

        Q, C = summ.mean.shape[1:]
        nu_t, ss_t = np.zeros((Q, C)), np.zeros((Q, C))
        trimmed = 0
        gauge = np.array([c.gauge_sigma for c in process.characteristics])
        for q in range(Q):
            for c in range(C):
                v = summ.var[:, q, c]
                nu = summ.count[:, q, c] - 1.0
                ok = np.isfinite(v) & (nu > 0)
                if not ok.any():
                    continue
                v, nu = v[ok], nu[ok]
                scale = np.median(v / (chi2.median(nu) / nu))
                keep = v <= scale * chi2.ppf(trim, nu) / nu if scale > 0 else np.ones(len(v), bool)
                trimmed += int((~keep).sum())
                # E[chi2_nu | chi2_nu < c] = nu F_{nu+2}(c) / F_nu(c): undo the truncation bias
                corr = np.mean(chi2.cdf(chi2.ppf(trim, nu), nu + 2) / trim) if scale > 0 else 1.0
                nu_t[q, c] = nu[keep].sum()
                ss_t[q, c] = (nu[keep] * v[keep]).sum() / corr
        return cls(nu_t, ss_t, gauge, trimmed)

    def mean_sd(self) -> np.ndarray:
        """Posterior-mean bar sd (Q, n_chars), physical units (0 where never gauged)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            tot = np.where(self.nu > 2, self.ss / np.maximum(self.nu - 2, 1), 0.0)
        return np.sqrt(np.maximum(tot - self.gauge**2, 0.0))

    def draws(self, n: int, seed: int) -> np.ndarray:
        """Posterior draws of the bar sd, (n, Q, n_chars), physical units."""
        rng = np.random.default_rng(seed)
        nu = np.maximum(self.nu, 1.0)
        tot = self.ss[None] / rng.chisquare(nu, size=(n, *nu.shape))
        out = np.sqrt(np.maximum(tot - self.gauge**2, 0.0))
        return np.where(self.nu[None] > 0, out, 0.0)


# ---------------------------------------------------------------------------
# Crack: a 0/1 characteristic, modelled apart
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CrackModel:
    """Share of cracked bars, and new cracking per stretch between crack gauges.

    For each inspection that gauges the crack characteristic (in order), the
    stretch since the previous one has: ``rate`` (share of batches that got new
    cracks), and a Beta(``alpha``, ``beta``) for the share of bars newly
    cracked in such a batch. Cracks never heal.

    Attributes
    ----------
    char : str or None
        The crack characteristic (None: the process has none).
    steps : tuple[int, ...]
        Inspections gauging it.
    rate, alpha, beta : tuple[float, ...]
    """

    char: str | None = None
    steps: tuple[int, ...] = ()
    rate: tuple[float, ...] = ()
    alpha: tuple[float, ...] = ()
    beta: tuple[float, ...] = ()

    @classmethod
    def fit(cls, summ: Summaries, process: Process) -> "CrackModel":
        chars = [c for c in process.characteristics if c.role == "crack"]
        if not chars:
            return cls()
        ci = process.char_index[chars[0].name]
        qs = [q for q, ins in enumerate(process.inspections) if chars[0].name in ins.measures]
        prev = np.zeros(summ.n_batches)
        rate, alpha, beta = [], [], []
        for q in qs:
            f = summ.mean[:, q, ci]
            ok = np.isfinite(f)
            new = np.clip(np.nan_to_num(f) - prev, 0.0, 1.0)
            hit = ok & (new > 1e-9)
            rate.append(float((hit.sum() + 0.5) / (ok.sum() + 1.0)))
            x = new[hit]
            if len(x) >= 3 and np.var(x) > 0:
                mu, var = float(np.mean(x)), float(np.var(x))
                k = max(mu * (1 - mu) / var - 1.0, 0.5)
                alpha.append(mu * k)
                beta.append((1 - mu) * k)
            else:
                alpha.append(1.0)
                beta.append(3.0)
            prev = np.where(ok, np.nan_to_num(f), prev)
        return cls(chars[0].name, tuple(process.inspections[q].step for q in qs), tuple(rate),
                   tuple(alpha), tuple(beta))


# ---------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FitReport:
    """What ``recovery fit`` prints.

    Attributes
    ----------
    method, sampler : str
    n_batches, n_parameters : int
    excluded_batches : int
        Batches in inspection patterns too rare to fit (named in ``notes``).
    compile_seconds, sample_seconds : float
    rhat_max, ess_bulk_min, ess_tail_min : float or None
        NUTS only.
    divergences : int or None
    worst : tuple of (name, rhat, ess_bulk)
        The parameters with the highest R-hat.
    expert : tuple of str
        Expert edits applied.
    conflicts : tuple of str
        Expert priors the data contradict (not overridden: the prior stays).
    notes : tuple of str
    """

    method: str
    sampler: str
    n_batches: int
    n_parameters: int
    excluded_batches: int
    compile_seconds: float
    sample_seconds: float
    rhat_max: float | None = None
    ess_bulk_min: float | None = None
    ess_tail_min: float | None = None
    divergences: int | None = None
    worst: tuple = ()
    expert: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        if self.rhat_max is None:
            return True
        return self.rhat_max < 1.1 and (self.divergences or 0) == 0

    def lines(self) -> list[str]:
        out = [f"method       {self.method} ({self.sampler})",
               f"batches      {self.n_batches}" + (f" ({self.excluded_batches} excluded: inspection "
                                                    f"pattern seen fewer than 3 times)"
                                                    if self.excluded_batches else ""),
               f"parameters   {self.n_parameters}",
               f"time         compile {self.compile_seconds:.1f} s, sampling {self.sample_seconds:.1f} s"]
        if self.rhat_max is not None:
            out += [f"R-hat        max {self.rhat_max:.3f}" + ("" if self.rhat_max < 1.1 else
                                                              "  (above 1.1: run longer)"),
                    f"ESS          bulk min {self.ess_bulk_min:.0f}, tail min {self.ess_tail_min:.0f}",
                    f"divergences  {self.divergences}"]
            if self.worst:
                out.append("worst mixing:")
                out += [f"  {n:50s} R-hat {r:.3f}  ESS {e:.0f}" for n, r, e in self.worst]
        for x in self.expert:
            out.append(f"expert       {x}")
        for x in self.conflicts:
            out.append(f"CONFLICT     {x}")
        for x in self.notes:
            out.append(f"note         {x}")
        return out


# ---------------------------------------------------------------------------
# The estimator
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VersionStamp:
    """Identifies a fitted model: what it was fitted to and with."""

    package: str
    model_format: int
    process_name: str
    process_digest: str
    data_digest: str
    draws_digest: str
    method: str
    created: str

    @property
    def id(self) -> str:
        h = hashlib.sha256(f"{self.process_digest}{self.data_digest}{self.draws_digest}"
                           f"{self.package}".encode())
        return h.hexdigest()[:12]


class CausalModel:
    """Bayesian causal process model of one process (an estimator).

    ``__init__`` only stores its arguments; :meth:`fit` learns. Learned
    attributes end in ``_``: ``graph_``, ``idata_`` (the posterior, ArviZ),
    ``params_`` (decoded draws used by queries), ``report_``, ``version_``.

    Parameters
    ----------
    process : Process or str, optional
        The process (or anything ``load_process`` accepts). Default: built-in.
    edits : ExpertEdits or path, optional
        Engineers' graph edits and priors (``examples/expert_edits.toml``).
    config : FitConfig, optional
    priors : PriorConfig, optional

    Examples
    --------
    >>> from simulators.process import Simulator
    >>> sim = Simulator("small")
    >>> data = sim.simulate(60, seed=1, explore=0.3).observations
    >>> model = CausalModel("small", config=FitConfig(method="advi", advi_steps=300,
    ...                                                draws=50)).fit(data, progress=False)
    >>> model.params_.n_draws
    50
    """

    def __init__(self, process: Process | str | None = None, *, edits: ExpertEdits | str | Path | None = None,
                 config: FitConfig | None = None, priors: PriorConfig | None = None):
        self.process = process
        self.edits = edits
        self.config = config
        self.priors = priors

    # ---- helpers -------------------------------------------------------
    def _process(self) -> Process:
        if isinstance(self.process, Process):
            return self.process
        return load_process(self.process)

    @property
    def fitted(self) -> bool:
        return hasattr(self, "params_")

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("this CausalModel is not fitted yet; call fit(data) or CausalModel.load(dir)")

    # ---- fitting -------------------------------------------------------
    def fit(self, data: pd.DataFrame | Summaries, *, progress: bool = True) -> "CausalModel":
        """Fit the model to step data.

        Parameters
        ----------
        data : DataFrame or Summaries
            Step data in the schema (simulated or ingested), many batches.
        progress : bool
            Show the sampler's progress bar.

        Returns
        -------
        CausalModel
            ``self``, fitted.

        Raises
        ------
        DataError
            The data do not match the process or hold too few batches.
        """
        process = self._process()
        cfg = self.config or FitConfig()
        priors = self.priors or PriorConfig()
        graph = CausalGraph.from_process(process, self.edits)
        summ = data if isinstance(data, Summaries) else summarise(data, process)
        if summ.n_batches < 10:
            raise DataError(f"need at least 10 batches to fit, got {summ.n_batches}")
        std = standardise(summ, graph)
        return self._fit(process, graph, summ, std, cfg, priors, prior=None, progress=progress)

    def update(self, new_data: pd.DataFrame | Summaries, *, progress: bool = True,
               config: FitConfig | None = None) -> "CausalModel":
        """Learn from new batches without refitting the history; returns a new model.

        The previous posterior becomes the prior, approximated by a multivariate
        normal on the unconstrained parameters matched to the posterior draws'
        mean and covariance (a Laplace-style approximation: it keeps the
        correlations between parameters but not skew or heavy tails, and it
        forgets nothing it cannot represent as a Gaussian). The
        standardisation, the graph and the expert edits stay those of the first
        fit. ``self`` is not changed.

        Parameters
        ----------
        new_data : DataFrame or Summaries
            Step data of the new batches only.
        progress : bool
        config : FitConfig, optional
            Default: the configuration of this model.

        Returns
        -------
        CausalModel
        """
        self._check_fitted()
        process = self.graph_.process
        summ = new_data if isinstance(new_data, Summaries) else summarise(new_data, process)
        if summ.n_batches < 1:
            raise DataError("no new batches")
        theta = self._theta_draws()
        mu = theta.mean(axis=0)
        cov = np.cov(theta, rowvar=False)
        # Shrink toward the diagonal a little: the draws estimate a covariance of
        # a few hundred parameters from about a thousand draws.
        cov = 0.9 * cov + 0.1 * np.diag(np.diag(cov)) + 1e-9 * np.eye(len(mu))
        new = CausalModel(process, edits=self.edits, config=config or self.config_, priors=self.priors_)
        out = new._fit(process, self.graph_, summ, self.std_, config or self.config_, self.priors_,
                       prior=(mu, cov), progress=progress, previous=self)
        return out

    def _fit(self, process: Process, graph: CausalGraph, summ: Summaries, std: Standardisation,
             cfg: FitConfig, priors: PriorConfig, *, prior, progress: bool,
             previous: "CausalModel | None" = None) -> "CausalModel":
        # The likelihood is compiled by nutpie (numba) or PyTensor's C backend;
        # its missing-BLAS warning concerns neither, so keep it off the console.
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        import pymc as pm

        fault_rate = np.zeros(len(process.inspections))
        for seg in graph.segments():
            r = 1.0 - np.prod([1.0 - process.faults[i].rate for i in seg.faults]) if seg.faults else 0.0
            fault_rate[seg.index] = r
        layout = Layout(graph, std, priors, fault_rate)
        all_summ = summ if previous is None else _concat_summaries(previous.summaries_, summ)
        spread = BarSpread.fit(all_summ, process, priors.spread_trim)
        fd = _fit_data(summ, graph, std, layout, spread)
        if not fd.patterns:
            raise DataError("no batch has gauge readings the model can use")
        # A lever the history never moved has features 0 in every batch: the data say
        # nothing about its effects, which keep their prior. Say so rather than let a
        # plan that moves it look learnt (queries flag such plans as out of range).
        data_notes = []
        if prior is None:
            acts = np.unique(layout.lever_f % layout.L)
            still = acts[np.all(np.isclose(summ.levers[:, acts], std.lever_nominal[acts]), axis=0)]
            if len(still):
                data_notes.append(
                    f"{', '.join(process.levers[j].name for j in still)}: never moved from nominal in "
                    f"these {summ.n_batches} batches, so the model knows nothing of "
                    f"{'its' if len(still) == 1 else 'their'} effects (prior sd {priors.lever_sd:g} "
                    "in standardised units); plans that move "
                    f"{'it' if len(still) == 1 else 'them'} are out of the data's range")
        t0 = time.perf_counter()
        with pm.Model(coords={"param": layout.names}) as model:
            if prior is None:
                theta = pm.Normal("theta", mu=layout.prior_mu, sigma=layout.prior_sd, dims="param")
            else:
                chol = np.linalg.cholesky(prior[1])
                theta = pm.MvNormal("theta", mu=prior[0], chol=chol, dims="param")
            P = layout.decode_tensor(theta)
            pm.Potential("loglik", _loglik_tensor(P, fd, layout, process.bars_per_batch))
            if prior is None and layout.drift_scale_i is not None:
                # Partial pooling of the factory drift slopes: kappa ~ N(0, sd_drift). The
                # wide base prior of theta stays underneath; an update's prior already holds this.
                import pytensor.tensor as pt
                kappa = theta[layout.drift_i]
                log_sd = theta[layout.drift_scale_i]
                pm.Potential("drift_pooling", pt.sum(-log_sd - 0.5 * (kappa / pt.exp(log_sd)) ** 2))
        # One BLAS thread: the chains run on their own threads, and each leapfrog
        # step factors small (35 x 35 on the default process) matrices; OpenBLAS's
        # own threads on top oversubscribed the two cores (14.4 ms per step and
        # chain against 5.4 ms with one BLAS thread, default process, two chains).
        # The CLI sets the same limit by environment before numpy loads; this one
        # covers fits from Python (notebooks, benchmarks, the service).
        with threadpool_limits(limits=1, user_api="blas"):
            sampler = "advi"
            if cfg.method == "advi":
                with model:
                    # Adam with a decaying step: the default (adagrad, 1e-3) is still far
                    # from the optimum after tens of thousands of steps on this model.
                    approx = pm.fit(n=cfg.advi_steps, method="advi", random_seed=cfg.seed,
                                    progressbar=progress,
                                    obj_optimizer=pm.adam(learning_rate=cfg.advi_learning_rate),
                                    callbacks=[pm.callbacks.CheckParametersConvergence(tolerance=1e-3)])
                    t1 = time.perf_counter()
                    idata = approx.sample(cfg.draws, random_seed=cfg.seed)
                t_compile, t_sample = 0.0, time.perf_counter() - t0
                notes = [f"ADVI, {cfg.advi_steps} steps, final loss {float(approx.hist[-1]):.1f}; "
                         "mean-field: posterior spread is underestimated"]
            else:
                sampler = cfg.sampler
                if sampler == "auto":
                    try:
                        import nutpie  # noqa: F401
                        sampler = "nutpie"
                    except ImportError:
                        sampler = "pymc"
                if sampler == "nutpie":
                    import nutpie

                    # Every chain starts at the prior means (catalogue fault rates, carry-over 1,
                    # no lever effect) rather than jittered by U(-1, 1) in standardised units:
                    # a jittered start can put a chain in a fault-mixture mode that explains a
                    # fault type as batch noise, where it stays (seen once in four fits of
                    # 1,000 batches: R-hat 1.84). R-hat still compares the chains.
                    compiled = nutpie.compile_pymc_model(model, jitter_rvs=set())
                    sd0 = layout.prior_sd if prior is None else np.sqrt(np.diag(prior[1]))
                    start, _ = _checked_start(compiled.logp_func, compiled.initial_point_func(0),
                                              sd0, layout.names)
                    compiled = replace(compiled, initial_point_func=lambda seed: start.copy())
                    t1 = time.perf_counter()
                    idata = nutpie.sample(compiled, draws=cfg.draws, tune=cfg.tune, chains=cfg.chains,
                                          cores=min(cfg.chains, 2), seed=cfg.seed, progress_bar=progress)
                else:
                    t1 = time.perf_counter()
                    with model:
                        idata = pm.sample(draws=cfg.draws, tune=cfg.tune, chains=cfg.chains, init="adapt_diag",
                                          cores=1, random_seed=cfg.seed, progressbar=progress,
                                          compute_convergence_checks=False)
                t_compile, t_sample = t1 - t0, time.perf_counter() - t1
                notes = []
            notes.extend(data_notes)
            raw = idata.posterior["theta"]
            mixed = True
            if cfg.robust == "sandwich" and cfg.method == "nuts" and raw.sizes["chain"] > 1:
                import arviz as az

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rh = float(np.nanmax(az.rhat(idata.posterior, var_names=["theta"])["theta"].values))
                if rh >= 1.1:
                    mixed = False
                    notes.append(f"posterior not widened for misspecification: the chains disagree "
                                 f"(R-hat {rh:.2f}), so a sandwich about their joint mean means nothing")
            if cfg.robust == "sandwich" and mixed:
                C, S = raw.sizes["chain"], raw.sizes["draw"]
                flat = np.asarray(raw.transpose("chain", "draw", ...).values).reshape(C * S, -1)
                adj, ratio = robust_adjust(flat, fd, layout, prior)
                idata.posterior["theta_robust"] = (("chain", "draw", "param"), adj.reshape(C, S, -1))
                k = int(np.argmax(ratio))
                notes.append(f"posterior widened for model misspecification (sandwich, from each batch's "
                             f"score): sd x{np.median(ratio):.2f} median, x{ratio.max():.1f} at most "
                             f"({layout.names[k]}); FitConfig(robust='none') keeps the sampler's draws")
        out = self
        out.graph_, out.layout_, out.std_ = graph, layout, std
        out.config_, out.priors_ = cfg, priors
        out.idata_ = idata
        # Spread and crack are conjugate: refit on every batch seen, exactly.
        out.crack_ = CrackModel.fit(all_summ, process)
        out.spread_ = spread
        out.summaries_ = all_summ
        out.ranges_ = _ranges(out.summaries_, process)
        out._finish(keep=cfg.keep_draws, seed=cfg.seed)
        report = _report(out, cfg, sampler, summ.n_batches, fd.excluded, t_compile, t_sample, notes,
                         prior_cov=None if prior is None else prior[1])
        if previous is not None:
            report = replace(report, notes=report.notes + (
                f"updated from model {previous.version_.id} with {summ.n_batches} new batches; "
                "previous posterior used as prior (multivariate normal, moment-matched)",))
        out.report_ = report
        out.version_ = VersionStamp(_package_version(), MODEL_FORMAT, process.name, process.digest,
                                    out.summaries_.digest(), _digest(self._theta_draws()), cfg.method,
                                    pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
        out._process_text = _process_text(process)
        return out

    def _theta_draws(self, robust: bool = True) -> np.ndarray:
        """Posterior draws ``(S, P)``: the robust ones when the fit made them."""
        name = "theta_robust" if robust and "theta_robust" in self.idata_.posterior else "theta"
        post = self.idata_.posterior[name]
        return np.asarray(post.stack(sample=("chain", "draw")).transpose("sample", ...).values)

    def _finish(self, keep: int, seed: int) -> None:
        theta = self._theta_draws()
        if len(theta) > keep:
            idx = np.linspace(0, len(theta) - 1, keep).round().astype(int)
            theta = theta[idx]
        params = self.layout_.decode(theta)
        p = self.graph_.process
        mod = [p.char_index[c] for c in self.graph_.modeled]
        sbar = self.spread_.draws(params.n_draws, seed)[:, :, mod] / self.std_.scale
        params = replace(params, sbar=sbar)
        for f in ("A", "B", "G", "tau", "m", "sbar", "pi", "tauf"):
            getattr(params, f).flags.writeable = False
        self.params_ = params
        self._do: dict[int, float] = {}

    # ---- interventions -------------------------------------------------
    def do(self, plan: Mapping[str, float] | np.ndarray) -> "CausalModel":
        """The model under an intervention on levers; a new object, ``self`` unchanged.

        Parameters
        ----------
        plan : mapping lever name -> value (physical units), or ndarray (n_levers,)
            Lever values to hold fixed; queries on the returned model use them
            whatever plan they are given for those levers.

        Returns
        -------
        CausalModel
            Shares the (read-only) posterior with ``self``.

        Examples
        --------
        >>> # hot = model.do({"temper_temperature": 490.0}); hot.predict(history)
        """
        self._check_fitted()
        p = self.graph_.process
        if isinstance(plan, Mapping):
            unknown = sorted(set(plan) - set(p.lever_index))
            if unknown:
                raise KeyError(f"unknown lever(s) {unknown}; known: {list(p.lever_index)}")
            fixed = {p.lever_index[k]: float(v) for k, v in plan.items()}
        else:
            arr = np.asarray(plan, dtype=np.float64)
            if arr.shape != (len(p.levers),):
                raise ValueError(f"plan must have shape ({len(p.levers)},), got {arr.shape}")
            fixed = {i: float(v) for i, v in enumerate(arr)}
        new = copy.copy(self)
        new._do = {**self._do, **fixed}
        return new

    @property
    def intervention(self) -> dict[str, float]:
        """Levers held fixed by :meth:`do` (name -> value)."""
        p = self.graph_.process
        return {p.levers[i].name: v for i, v in getattr(self, "_do", {}).items()}

    # ---- queries (see recovery.causal.queries) -------------------------
    def state(self, history: pd.DataFrame, **kw):
        """Posterior of the batch's hidden characteristics; see :func:`queries.state`."""
        from recovery.causal import queries
        return queries.state(self, history, **kw)

    def state_draws(self, history: pd.DataFrame, n: int, **kw):
        """Joint draws of the batch's hidden state; see :func:`queries.state_draws`."""
        from recovery.causal import queries
        return queries.state_draws(self, history, n, **kw)

    def predict(self, history: pd.DataFrame, plan=None, **kw):
        """Posterior predictive of the final characteristics and of acceptance; see :func:`queries.predict`."""
        from recovery.causal import queries
        return queries.predict(self, history, plan, **kw)

    def predict_many(self, history: pd.DataFrame, plans: np.ndarray, **kw):
        """P(accept) of many plans for one batch; see :func:`queries.predict_many`."""
        from recovery.causal import queries
        return queries.predict_many(self, history, plans, **kw)

    def root_cause(self, history: pd.DataFrame, **kw):
        """Posterior over the origin of the batch's deviation; see :func:`queries.root_cause`."""
        from recovery.causal import queries
        return queries.root_cause(self, history, **kw)

    # ---- persistence ---------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the model to a directory.

        Files: ``posterior.nc`` (ArviZ InferenceData, netCDF), ``model.json``
        (version stamp, configuration, standardisation, parameter names and
        priors, training ranges, crack model, fit report), ``graph.json``,
        ``process.toml`` (the exact process text) and ``training.npz`` (the
        per-batch summaries the model was fitted to).

        Returns
        -------
        Path
        """
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.idata_.to_netcdf(str(d / "posterior.nc"), engine="h5netcdf")
        (d / "graph.json").write_text(self.graph_.to_json())
        (d / "process.toml").write_text(self._process_text)
        s = self.summaries_
        np.savez_compressed(d / "training.npz", batch_ids=s.batch_ids.astype(str), mean=s.mean,
                            var=s.var, count=s.count, levers=s.levers, lever_seen=s.lever_seen,
                            day=s.day, last_step=s.last_step)
        meta = {
            "version": asdict(self.version_),
            "version_id": self.version_.id,
            "config": asdict(self.config_),
            "priors": asdict(self.priors_),
            "standardisation": self.std_.to_dict(),
            "layout": self.layout_.to_dict(),
            "crack": asdict(self.crack_),
            "spread": {"nu": self.spread_.nu.tolist(), "ss": self.spread_.ss.tolist(),
                       "gauge": self.spread_.gauge.tolist(), "trimmed": self.spread_.trimmed},
            "report": _jsonable(asdict(self.report_)),
        }
        (d / "model.json").write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "CausalModel":
        """Read a model written by :meth:`save`.

        Raises
        ------
        ModelLoadError
            The directory or a file is missing, or it was written by an
            incompatible model format.
        """
        import arviz as az

        d = Path(directory)
        if not d.is_dir():
            raise ModelLoadError(f"{d}: no such model directory (run 'recovery fit' first)")
        need = ["model.json", "graph.json", "process.toml", "posterior.nc", "training.npz"]
        missing = [n for n in need if not (d / n).exists()]
        if missing:
            raise ModelLoadError(f"{d}: not a model directory; missing {missing}")
        meta = json.loads((d / "model.json").read_text())
        fmt = meta.get("version", {}).get("model_format")
        if fmt != MODEL_FORMAT:
            raise ModelLoadError(f"{d}: model format {fmt}, this version reads {MODEL_FORMAT}; refit")
        text = (d / "process.toml").read_text()
        process = parse_process(text, f"{d}/process.toml")
        if process.digest != meta["version"]["process_digest"]:
            raise ModelLoadError(f"{d}: process.toml does not match the model's process digest")
        graph = CausalGraph.from_dict(json.loads((d / "graph.json").read_text()), process)
        priors = PriorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["priors"].items()})
        cfg = FitConfig(**meta["config"])
        std = Standardisation.from_dict(meta["standardisation"])
        z = np.load(d / "training.npz", allow_pickle=False)
        summ = Summaries(z["batch_ids"].astype(object), z["mean"], z["var"], z["count"], z["levers"],
                         z["lever_seen"], z["day"], z["last_step"])
        fault_rate = np.zeros(len(process.inspections))
        for seg in graph.segments():
            if seg.faults:
                fault_rate[seg.index] = 1.0 - np.prod([1.0 - process.faults[i].rate for i in seg.faults])
        layout = Layout(graph, std, priors, fault_rate)
        if layout.names != meta["layout"]["names"]:
            raise ModelLoadError(f"{d}: the stored parameter layout does not match this version's; refit")
        layout.prior_mu = np.asarray(meta["layout"]["prior_mu"])
        layout.prior_sd = np.asarray(meta["layout"]["prior_sd"])
        m = cls(process, edits=graph.edits, config=cfg, priors=priors)
        m.graph_, m.layout_, m.std_, m.config_, m.priors_ = graph, layout, std, cfg, priors
        idata = az.from_netcdf(str(d / "posterior.nc"), engine="h5netcdf")
        # read everything into memory and let go of the file, so the model can be
        # saved again into the folder it came from
        for group in idata.groups():
            getattr(idata, group).load().close()
        m.idata_ = idata
        m.crack_ = CrackModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["crack"].items()})
        m.summaries_ = summ
        sp = meta["spread"]
        m.spread_ = BarSpread(np.asarray(sp["nu"], float), np.asarray(sp["ss"], float),
                              np.asarray(sp["gauge"], float), int(sp["trimmed"]))
        m.ranges_ = _ranges(summ, process)
        m._finish(keep=cfg.keep_draws, seed=cfg.seed)
        rep = meta["report"]
        m.report_ = FitReport(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                                 if isinstance(v, list) else v for k, v in rep.items()})
        m.version_ = VersionStamp(**meta["version"])
        m._process_text = text
        return m


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

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


def _ranges(summ: Summaries, process: Process) -> Ranges:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Ranges(summ.levers.min(axis=0), summ.levers.max(axis=0),
                      np.nanmin(summ.mean, axis=0), np.nanmax(summ.mean, axis=0))


def _concat_summaries(a: Summaries, b: Summaries) -> Summaries:
    return Summaries(np.concatenate([a.batch_ids, b.batch_ids]), *(
        np.concatenate([getattr(a, f), getattr(b, f)]) for f in
        ("mean", "var", "count", "levers", "lever_seen", "day", "last_step")), a.ignored_rows + b.ignored_rows)


def _report(model: CausalModel, cfg: FitConfig, sampler: str, n_batches: int, excluded: int,
            t_compile: float, t_sample: float, notes: list[str], prior_cov=None) -> FitReport:
    import arviz as az

    layout = model.layout_
    post = model.idata_.posterior
    rhat_max = ess_b = ess_t = div = None
    worst: tuple = ()
    if cfg.method == "nuts":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rh = np.asarray(az.rhat(post, var_names=["theta"])["theta"].values)
            eb = np.asarray(az.ess(post, var_names=["theta"], method="bulk")["theta"].values)
            et = np.asarray(az.ess(post, var_names=["theta"], method="tail")["theta"].values)
        rh = np.nan_to_num(rh, nan=1.0)
        rhat_max, ess_b, ess_t = float(rh.max()), float(np.nanmin(eb)), float(np.nanmin(et))
        ss = model.idata_.sample_stats
        key = "diverging" if "diverging" in ss else None
        div = int(np.asarray(ss[key]).sum()) if key else 0
        order = np.argsort(-rh)[:5]
        worst = tuple((layout.names[i], float(rh[i]), float(eb[i])) for i in order)
    theta = model._theta_draws(robust=False)
    widen = model._theta_draws().var(axis=0) / np.maximum(theta.var(axis=0), 1e-300)
    conflicts = []
    for k, to_phys, label in layout.expert:
        # Data-only estimate by subtracting prior precision from posterior precision
        # (Gaussian approximation, on the sampler's draws; the robust adjustment then
        # widens it as it widened the posterior); a z above 3 means the data disagree.
        pm_, pv = theta[:, k].mean(), theta[:, k].var()
        m0, v0 = layout.prior_mu[k], layout.prior_sd[k] ** 2
        lik_prec = (1.0 / max(pv, 1e-12) - 1.0 / v0) / max(widen[k], 1.0)
        if lik_prec <= 1e-12:
            continue
        lik_mean = (pm_ / pv - m0 / v0) / (lik_prec * max(widen[k], 1.0))
        z = abs(lik_mean - m0) / math.sqrt(v0 + 1.0 / lik_prec)
        if z > 3:
            conflicts.append(f"{label}: the data say {lik_mean * to_phys:.4g} +- "
                             f"{math.sqrt(1 / lik_prec) * abs(to_phys):.2g}, the expert prior "
                             f"{m0 * to_phys:.4g} +- {math.sqrt(v0) * abs(to_phys):.2g} "
                             f"(z = {z:.1f}); the prior is kept - check it")
    expert_added = [e for e in model.graph_.edges if e.origin == "expert" and e.kind != "carry"]
    for e in expert_added:
        info = _edge_support(model, e)
        if info:
            notes.append(info)
    if excluded:
        notes.append(f"{excluded} batches were not used: their inspection pattern (which gauges "
                     "have readings) occurs fewer than 3 times")
    notes.extend(layout.expert_notes)
    if model.spread_.trimmed:
        notes.append(f"{model.spread_.trimmed} batch readings with a fault-sized spread left out of "
                     "the bar-to-bar spread estimate (chi-square trim; see docs/causal-model.md)")
    if model.summaries_.ignored_rows:
        notes.append(f"{model.summaries_.ignored_rows} measurement rows at non-inspection steps ignored")
    return FitReport(cfg.method, sampler, n_batches, layout.size, excluded, t_compile, t_sample,
                     rhat_max, ess_b, ess_t, div, worst, tuple(model.graph_.log), tuple(conflicts),
                     tuple(notes))


def _edge_support(model: CausalModel, edge) -> str | None:
    """Whether the data support an edge an engineer added (it stays either way)."""
    g, layout = model.graph_, model.layout_
    theta = model._theta_draws()
    q = g.segment_of_step(edge.step)
    c = g.modeled_index.get(edge.target)
    if c is None:
        return None
    if edge.kind == "lever":
        j = g.process.lever_index[edge.source]
        hit = np.flatnonzero((layout.lever_q == q) & (layout.lever_c == c) & (layout.lever_f == j))
        idx = layout.lever_i[hit]
    else:
        c2 = g.modeled_index.get(edge.source)
        hit = np.flatnonzero((layout.carry_q == q) & (layout.carry_c == c) & (layout.carry_c2 == c2))
        idx = layout.carry_i[hit]
    if not len(idx):
        return None
    x = theta[:, idx[0]]
    lo, hi = np.quantile(x, [0.03, 0.97])
    verdict = "supported by the data" if lo > 0 or hi < 0 else "not distinguishable from zero in the data (kept)"
    return f"expert edge {edge.source} -> {edge.target} at step {edge.step}: {verdict}"


def _process_text(process: Process) -> str:
    from importlib import resources

    from simulators.definition import BUILTIN_PROCESSES

    if process.source in BUILTIN_PROCESSES.values():
        return resources.files("simulators.processes").joinpath(process.source).read_text("utf-8")
    path = Path(process.source)
    if path.exists():
        return path.read_text("utf-8")
    raise ModelLoadError(f"cannot find the text of process '{process.name}' ({process.source})")


def _package_version() -> str:
    from recovery import __version__
    return __version__


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
