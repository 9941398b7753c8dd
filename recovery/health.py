"""Plant health: where each factory's process is going and how often each fault strikes.

:func:`plant_health` reads the fitted causal model's posterior (factory drift,
the mean level at each gauge, the per-segment fault-shift rate) and, given
step data, tests whether recent batches moved beyond what the model expects.

How the change test works
-------------------------
For every batch and every gauged pair ``(inspection q, characteristic c)`` the
model predicts the reading from the previous inspection's readings, the lever
set points and the production day (posterior means, standardised units)::

    e[q, c] = (z[q, c] - m[q, c]) - A[q] (z[q-1] - m[q-1]) - B[q] f(levers) - G[q, c] t

Under the model, ``e`` is process noise plus measurement noise (sd
``sqrt(tau**2 + R)``) with probability ``1 - pi[q]``, and has the extra
fault-shift sd ``tauf`` with probability ``pi[q]``. Over the window (batches
produced on or after ``since``):

* **a factory's level** moved when the fault-weighted mean innovation of its
  gauged pair lies outside what the model expects (mean 0, sd from the noise,
  plus the spread of that mean innovation over the posterior draws of ``m``,
  ``G``, ``A`` and ``B``: the model's own uncertainty at the window's days and
  lever settings, which with hundreds of window batches outweighs the noise);
* **a fault's rate** moved when the sum of the window batches' fault
  responsibilities (the posterior probability of a fault shift in the segment
  given ``e``, with the readings whose level test fired centred on the window's
  median so that the shift does not read as faults) exceeds what the same
  model reads in the batches before the window (at least ``min_baseline`` of
  them): ``Binomial(n_window, p)`` with ``p ~ Beta(k + 1/2, n - k + 1/2)``,
  ``k`` the sum of the ``n`` baseline batches' responsibilities (one-sided: a
  rate that rises). Comparing with the model's own reading of the earlier
  batches, rather than with its rate ``pi``, keeps a misfit that inflates the
  responsibilities everywhere (heavy-tailed readings taken for faults) from
  raising alarms; on the 20 unchanged seasons of ``benchmarks/health_seasons.py``
  the comparison with ``pi`` alone raised a false alarm on the final
  inspection's fault in 4, this one in 1 (BENCHMARKS.md). Without a baseline the window is held against
  ``Binomial(n_window, pi)`` averaged over the posterior draws.

Each test is two-sided (the fault test one-sided) at level ``alpha`` divided
by the number of tests (Bonferroni), so on a season without change the report
raises no alarm with probability at least ``1 - alpha``. Since the innovation
uses the previous *readings* rather than the hidden state, measurement noise
carried through ``A`` widens ``e`` a little; the test is then conservative.

Offsets and projections
-----------------------
A factory's *offset* on a characteristic is the model's mean reading at the
first gauge its drift reaches, at nominal levers on the model's reference day,
minus the reference of that gauge: the middle of its gate band (the final
tolerance band at the last inspection), else the characteristic's nominal
value. The *gate day* is the first production day (from the last day of data
on, at most ``horizon_days`` ahead) on which the posterior mean share of batches
whose gauge mean falls outside the gate band exceeds ``gate_level``, with the
factory's drift continuing linearly and everything else held at the
reference; batch-to-batch spread is the spread of the training readings
around that trend.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from typing import TYPE_CHECKING

import numpy as np
# scipy.special, not scipy.stats: the same functions at a fraction of the import time
from scipy.special import bdtrc, betaincinv, ndtr

if TYPE_CHECKING:   # pandas only for the annotation: without a store the report never loads it
    import pandas as pd

__all__ = ["FactoryHealth", "FaultHealth", "HealthReport", "HealthModel", "load_health_model", "plant_health",
           "HDI_PROB"]

#: Probability mass of every interval in the report.
HDI_PROB = 0.94
#: Quantile grid over the baseline's fault share in the fault-rate test.
_GRID = 200


@dataclass(frozen=True)
class FactoryHealth:
    """One factory's drift on one characteristic (units: the characteristic's).

    Attributes
    ----------
    factory, partner, characteristic, unit : str
    offset, offset_low, offset_high : float
        Mean reading at the gauge minus its reference (see the module
        docstring), with its 94% interval.
    drift_per_100d, drift_low, drift_high : float
        Drift per 100 production days, with its 94% interval.
    changed : bool or None
        The level at the gauge moved in the window beyond the model's
        expectation; None when the window holds no usable batch.
    change_p : float or None
        p-value of the change test (before the Bonferroni correction).
    gauge_step : int
        The inspection step whose readings the offset and the test use.
    reference : str
        What the offset is measured from.
    gate_day : float or None
        Projected production day on which the flagged share at the gate exceeds
        the gate level; None without a gate or when the drift does not get there
        within the horizon.
    """

    factory: str
    partner: str
    characteristic: str
    unit: str
    offset: float
    offset_low: float
    offset_high: float
    drift_per_100d: float
    drift_low: float
    drift_high: float
    changed: bool | None
    change_p: float | None
    gauge_step: int
    reference: str
    gate_day: float | None


@dataclass(frozen=True)
class FaultHealth:
    """One fault type's rate (probability per batch) in its segment.

    Attributes
    ----------
    fault : str
    step : int
        The step the fault strikes at.
    segment_end : int
        The inspection ending the segment the model estimates the rate for.
    rate, low, high : float
        Posterior mean and 94% interval. The model learns one fault-shift rate
        per segment; with several faults in a segment it is shared in
        proportion to their catalogue rates.
    changed : bool or None
        The window holds more fault shifts than the model expects.
    change_p : float or None
    window_share, expected_share : float or None
        Share of window batches with a fault shift in the segment (sum of
        responsibilities / batches) and what the test holds it against: the same
        share in the batches before the window, else the model's rate.
    """

    fault: str
    step: int
    segment_end: int
    rate: float
    low: float
    high: float
    changed: bool | None
    change_p: float | None
    window_share: float | None
    expected_share: float | None


@dataclass(frozen=True)
class HealthReport:
    """The report of :func:`plant_health`; :meth:`to_dict` is the JSON contract."""

    process: str
    factories: tuple[FactoryHealth, ...]
    faults: tuple[FaultHealth, ...]
    since: float | None
    until: float | None
    n_window: int
    n_baseline: int
    gate_level: float
    alpha: float
    notes: tuple[str, ...] = field(default=())

    @property
    def changed_factories(self) -> list[tuple[str, str]]:
        return [(f.factory, f.characteristic) for f in self.factories if f.changed]

    @property
    def changed_faults(self) -> list[str]:
        return [f.fault for f in self.faults if f.changed]

    def to_dict(self) -> dict:
        return {
            "process": self.process,
            "factories": [asdict(f) for f in self.factories],
            "faults": [asdict(f) for f in self.faults],
            "window": {"since": self.since, "until": self.until, "n_batches": self.n_window,
                       "n_baseline": self.n_baseline},
            "gate_level": self.gate_level,
            "alpha": self.alpha,
            "interval": HDI_PROB,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, eq=False)
class HealthModel:
    """The parts of a saved model that :func:`plant_health` reads, loaded by
    :func:`load_health_model` without ArviZ.

    Attributes (as ``CausalModel``'s of the same names)
    ----------
    graph_, layout_, std_, summaries_, params_
        Causal graph, parameter layout, standardisation, training summaries and
        the kept decoded draws (the same arrays a full load gives).
    theta : ndarray (S, P)
        Every posterior draw of ``theta`` (the robust ones when the fit made them).
    """

    graph_: object
    layout_: object
    std_: object
    summaries_: object
    params_: object
    theta: np.ndarray

    def check_fitted(self) -> None:
        """Always fitted: it is only ever read from a saved model."""

    def theta_draws(self) -> np.ndarray:
        return self.theta


def load_health_model(directory) -> HealthModel:
    """Read what the health report needs from a model directory (``CausalModel.save``).

    ``CausalModel.load`` reads ``posterior.nc`` through ArviZ, whose import takes
    most of a load's time; the report needs only the draws of ``theta``, read
    here with h5py (:func:`recovery.causal.persistence.read_theta`). Every check
    of a full load (format, process digest, parameter layout) still runs, and the
    saved format is unchanged.

    Parameters
    ----------
    directory : str or Path

    Returns
    -------
    HealthModel

    Raises
    ------
    recovery.causal.errors.ModelLoadError
        Not a model directory, or one of another format or layout.
    """
    from recovery.causal import persistence
    from recovery.causal.posterior import params_from_theta

    s = persistence.load(directory, posterior=False)
    theta = persistence.read_theta(directory, s.layout.names)
    params = params_from_theta(theta, s.layout, s.graph, s.spread, s.std,
                               keep=s.config.keep_draws, seed=s.config.seed)
    return HealthModel(s.graph, s.layout, s.std, s.summaries, params, theta)


def _interval(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and central 94% interval of draws ``x (S,)``."""
    lo, hi = np.quantile(x, [(1 - HDI_PROB) / 2, (1 + HDI_PROB) / 2])
    return float(np.mean(x)), float(lo), float(hi)


def _clean(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _innovations(model, summ) -> tuple[np.ndarray, np.ndarray]:
    """Innovations ``e (B, Q, d)`` and their no-fault variance ``v (B, Q, d)``,
    standardised units, NaN where not gauged (see the module docstring)."""
    P, std, lay, g = model.params_, model.std_, model.layout_, model.graph_
    p = g.process
    mod = [p.char_index[c] for c in g.modeled]
    A, B, G = P.A.mean(0), P.B.mean(0), P.G.mean(0)
    m, tau, sbar = P.m.mean(0), P.tau.mean(0), P.sbar.mean(0)
    z = (summ.mean[:, :, mod] - std.centre[None]) / std.scale
    dev = z - m[None]
    f = std.features(summ.levers)                      # (B, F)
    t = (summ.day - std.day_ref) / 100.0               # (B,)
    gauge = np.array([p.characteristics[i].gauge_sigma for i in mod]) / std.scale
    count = np.maximum(summ.count[:, :, mod], 1)
    R = (sbar[None] ** 2 + gauge[None, None] ** 2) / count
    e = np.full(z.shape, np.nan)
    for q in range(lay.Q):
        prev = np.nan_to_num(dev[:, q - 1]) if q else np.zeros_like(dev[:, 0])
        e[:, q] = dev[:, q] - prev @ A[q].T - f @ B[q].T - t[:, None] * G[q][None]
    var = tau**2
    if P.mix is not None:   # the noise reaches the segment's end along its within-step edges
        var = np.einsum("qab,qb->qa", P.mix.mean(0) ** 2, var)
    v = var[None] + R
    e[~lay.gauged[None].repeat(len(e), 0)] = np.nan
    return e, v


def _responsibility(e: np.ndarray, v: np.ndarray, pi: float, tauf: np.ndarray) -> np.ndarray:
    """P(fault shift in the segment | innovations), per batch; ``e, v (B, d)``."""
    ok = np.isfinite(e) & (tauf[None] > 0)
    ee, vv = np.where(ok, e, 0.0), np.where(ok, v, 1.0)
    vf = vv + tauf[None] ** 2
    ll0 = np.where(ok, -0.5 * (np.log(vv) + ee ** 2 / vv), 0.0).sum(1)
    ll1 = np.where(ok, -0.5 * (np.log(vf) + ee ** 2 / vf), 0.0).sum(1)
    lr = np.clip(ll1 - ll0 + math.log(pi) - math.log1p(-pi), -50, 50)
    r = 1.0 / (1.0 + np.exp(-lr))
    return np.where(ok.any(1), r, np.nan)


def _gauge_of_pair(lay, k: int, c: int) -> int | None:
    """First gauged segment at or after the first one the drift pair reaches."""
    qs = [q for q in range(lay.Q) if lay.drift_map[k, q * lay.d + c]]
    if not qs:
        return None
    for q in range(min(qs), lay.Q):
        if lay.gauged[q, c]:
            return q
    return None


def _gate_day(level: np.ndarray, drift: np.ndarray, spread: float, lo: float, hi: float,
              day_ref: float, start: float, gate_level: float, horizon_days: float) -> float | None:
    """First day in ``[start, start + horizon]`` (1-day grid) on which the posterior
    mean share outside ``[lo, hi]`` exceeds ``gate_level``; ``level, drift (S,)``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or spread <= 0:
        return None
    days = start + np.arange(0.0, horizon_days + 1.0)
    mu = level[:, None] + drift[:, None] * (days[None] - day_ref) / 100.0
    share = (ndtr((lo - mu) / spread) + ndtr((mu - hi) / spread)).mean(0)
    over = np.flatnonzero(share > gate_level)
    return float(days[over[0]]) if len(over) else None


def plant_health(model, history: pd.DataFrame | None = None, *, since: float | None = None,
                 window_days: float = 30.0, gate_level: float = 0.5, partner: str | None = None,
                 alpha: float = 0.05, horizon_days: float = 3650.0, min_baseline: int = 30) -> HealthReport:
    """Drift, offsets and fault rates of a fitted model, with a change test on recent data.

    Parameters
    ----------
    model : CausalModel or HealthModel
        Fitted or loaded (:func:`load_health_model` reads only what is needed here).
    history : DataFrame, optional
        Step data (the schema) of the model's process to test for change;
        default: the batches the model was fitted on.
    since : float, optional
        First production day (days) of the change window; default: the last day
        in the data minus ``window_days``.
    window_days : float
        Window length (days) when ``since`` is not given.
    gate_level : float
        Share of flagged batches (0-1) whose projected crossing gives the gate day.
    partner : str, optional
        Only this partner's factories, and the faults at steps it runs.
    alpha : float
        Family-wise false-alarm level of the change tests (5%: on a season
        without change no alarm at all on at least 95% of seasons).
    horizon_days : float
        How far ahead (days) the gate day is searched.
    min_baseline : int
        Batches before the window that the fault-rate test needs to compare the
        window with them; with fewer it compares with the model's rate.

    Returns
    -------
    HealthReport

    Examples
    --------
    >>> # report = plant_health(CausalModel.load("model"), store.read_steps(process=...))
    >>> # report.changed_factories, report.changed_faults
    """
    if not 0.0 < gate_level < 1.0:
        raise ValueError(f"gate_level must lie in (0, 1), got {gate_level}")
    model.check_fitted()
    lay = model.layout_
    notes: list[str] = []
    data = _change_data(model, history, since, window_days, notes)
    tests = len(lay.drift_pairs) + len(lay.rate_q)
    crit = alpha / max(tests, 1)
    factories, moved = _factory_rows(model, data, partner, crit, gate_level, horizon_days)
    faults = _fault_rows(model, data, moved, partner, crit, min_baseline)
    if partner is not None and not factories and not faults:
        notes.append(f"partner '{partner}' runs none of the model's factories or fault steps")
    read = data.summ is not None and data.summ.n_batches
    return HealthReport(model.graph_.process.name, tuple(factories), tuple(faults),
                        _clean(data.since) if read else None, data.until,
                        int(data.window.sum()), int(data.base.sum()), float(gate_level), float(alpha), tuple(notes))


@dataclass
class _ChangeData:
    """The step data of the change test, as :func:`_change_data` read them."""

    summ: object | None                 # batch summaries; None when there are none to test
    since: float | None                 # first day (days) of the window
    until: float | None                 # last production day (days) in the data
    window: np.ndarray                  # (batches,) bool: produced on or after ``since``
    base: np.ndarray                    # (batches,) bool: produced before ``since``
    e: np.ndarray | None = None         # innovations (see _innovations); None: no test
    v: np.ndarray | None = None         # their variances


def _change_data(model, history, since, window_days, notes: list[str]) -> _ChangeData:
    """Summaries, window and baseline, and innovations of the step data to test;
    why the test cannot run goes to ``notes``."""
    from recovery.causal.errors import DataError
    from recovery.causal.summaries import summarise

    p = model.graph_.process
    if history is None:
        summ = model.summaries_
    elif not len(history):
        summ = None
        notes.append("no step data: the change test did not run")
    else:
        try:
            summ = summarise(history, p)
        except (DataError, ValueError, KeyError) as exc:
            summ = None
            notes.append(f"step data do not match the model's process '{p.name}' ({exc}); "
                         "the change test did not run")
    data = _ChangeData(summ, since, None, np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
    if summ is not None and summ.n_batches:
        day = np.asarray(summ.day, dtype=float)
        data.until = float(np.nanmax(day))
        if data.since is None:
            data.since = data.until - window_days
        data.window, data.base = day >= data.since, day < data.since
        if not data.window.any():
            notes.append(f"no batch produced on or after day {data.since:g} (last day in the data: "
                         f"{data.until:g}); the change test did not run")
        else:
            data.e, data.v = _innovations(model, summ)
    elif summ is not None:
        notes.append("no batches in the step data: the change test did not run")
    return data


def _factory_rows(model, data: _ChangeData, partner, crit: float, gate_level: float,
                  horizon_days: float) -> tuple[list[FactoryHealth], dict[int, set[int]]]:
    """Offset, drift, level test and gate day of every (factory, characteristic) pair;
    also the characteristics whose level moved in the window, by segment."""
    g, lay, std, P = model.graph_, model.layout_, model.std_, model.params_
    p = g.process
    mod = [p.char_index[c] for c in g.modeled]
    # spread of gauge readings around the model's trend, for the gate projection
    Gm = P.G.mean(0)
    # the same draws as params_ (kept_params thins theta evenly to keep_draws)
    theta = model.theta_draws()
    if len(theta) > P.n_draws:
        theta = theta[np.linspace(0, len(theta) - 1, P.n_draws).round().astype(int)]

    factories = []
    moved: dict[int, set[int]] = {}  # segment -> characteristics whose level moved in the window
    fac = {f.id: f for f in p.factories}
    for k, (fi, c) in enumerate(lay.drift_pairs):
        f = p.factories[fi]
        if partner is not None and f.partner != partner:
            continue
        q = _gauge_of_pair(lay, k, c)
        if q is None:
            continue
        ci = mod[c]
        ch = p.characteristics[ci]
        step = p.inspection_steps[q]
        scale = float(std.scale[c])
        level = std.centre[q, c] + scale * P.m[:, q, c]
        lo, hi = p.gate_bands(step)
        if math.isfinite(lo[ci]) and math.isfinite(hi[ci]):
            ref, ref_txt = 0.5 * (lo[ci] + hi[ci]), f"middle of the band at step {step}"
        else:
            ref, ref_txt = ch.nominal, f"nominal {ch.nominal:g} {ch.unit}"
        off = _interval(level - ref)
        theta_k = theta[:, lay.drift_i[k]] * scale
        dr = _interval(theta_k)
        pval = _level_p_value(model, data, q, c)
        changed = None if pval is None else bool(pval < crit)
        if changed:
            moved.setdefault(q, set()).add(c)
        spread = _reading_spread(model, q, c, Gm)
        start = data.until if data.until is not None else float(np.max(model.summaries_.day))
        gd = _gate_day(level, theta_k, spread * scale,
                       float(lo[ci]), float(hi[ci]), std.day_ref, start, gate_level, horizon_days)
        factories.append(FactoryHealth(f.id, fac[f.id].partner, ch.name, ch.unit, *off, *dr, changed,
                                       _clean(pval), step, ref_txt, gd))
    return factories, moved


def _level_p_value(model, data: _ChangeData, q: int, c: int) -> float | None:
    """Two-sided p-value that the window's mean innovation at ``(q, c)`` is zero, the
    readings weighted by their chance of being fault-free; None when it cannot be tested."""
    lay, P, e, v = model.layout_, model.params_, data.e, data.v
    if e is None:
        return None
    w = data.window & np.isfinite(e[:, q, c])
    if not w.any():
        return None
    pi = float(P.pi[:, q].mean()) if q in set(lay.rate_q.tolist()) else 0.0
    resp = (_responsibility(e[w, q][:, [c]], v[w, q][:, [c]], pi, P.tauf[:, q, [c]].mean(0))
            if pi > 0 else np.zeros(w.sum()))
    wt = 1.0 - np.nan_to_num(resp)
    if not wt.sum() > 0:
        return None
    mean_e = float((wt * e[w, q, c]).sum() / wt.sum())
    var_e = float((wt ** 2 * v[w, q, c]).sum() / wt.sum() ** 2)
    var_post = float(np.var(_mean_innovation_draws(model, data.summ, w, wt / wt.sum(), q, c)))
    zz = mean_e / math.sqrt(var_e + var_post)
    return float(2 * ndtr(-abs(zz)))


def _mean_innovation_draws(model, summ, w: np.ndarray, wt: np.ndarray, q: int, c: int) -> np.ndarray:
    """The weighted mean innovation of the batches ``w`` at ``(q, c)`` under each
    posterior draw ``(S,)``, standardised units; weights ``wt`` sum to 1.

    The innovation is linear in the batch's readings, lever features and day, so
    its weighted mean is the innovation of the weighted means. Its spread over the
    draws is what the model's own uncertainty (mean, drift, carry-over, lever
    effects) adds to the window's mean innovation: with hundreds of window
    batches the noise term shrinks and this one remains (the window's explored
    levers and days lie away from the training's, where the posterior is wider).
    """
    P, std = model.params_, model.std_
    p = model.graph_.process
    mod = [p.char_index[x] for x in model.graph_.modeled]
    z = (summ.mean[w][:, :, mod] - std.centre[None]) / std.scale
    zq = float(wt @ z[:, q, c])
    f = wt @ std.features(summ.levers[w])                      # (F,)
    t = float(wt @ ((summ.day[w] - std.day_ref) / 100.0))
    out = zq - P.m[:, q, c] - P.B[:, q, c] @ f - P.G[:, q, c] * t
    if q:
        prev = z[:, q - 1]
        seen = np.isfinite(prev)
        # the previous deviation is 0 where not gauged (as in _innovations)
        zp = wt @ np.where(seen, prev, 0.0)                     # (d,)
        mp = P.m[:, q - 1] * (wt @ seen)[None]                  # (S, d)
        out = out - np.einsum("sa,sa->s", P.A[:, q, c], zp[None] - mp)
    return out


def _fault_rows(model, data: _ChangeData, moved: dict[int, set[int]], partner, crit: float,
                min_baseline: int) -> list[FaultHealth]:
    """Rate interval and window-versus-baseline rate test of every modelled fault
    (only those at the partner's steps when ``partner`` is given)."""
    lay, P = model.layout_, model.params_
    p = model.graph_.process
    faults = []
    partner_steps = {s.index for s in p.steps if partner is None or s.partner == partner}
    for q in lay.rate_q.tolist():
        seg = lay.segments[q]
        members = [p.faults[i] for i in seg.faults]
        if not members:
            continue
        total = sum(ft.rate for ft in members) or 1.0
        pi_draws = np.asarray(P.pi[:, q])
        changed = pval = wshare = eshare = None
        if data.e is not None and data.window.any():
            test = _rate_test(model, data, moved, q, pi_draws, min_baseline)
            if test is not None:
                pval, wshare, eshare = test
                changed = bool(pval < crit)
        for ft in members:
            if ft.step not in partner_steps:
                continue
            share = ft.rate / total
            faults.append(FaultHealth(ft.name, ft.step, p.inspection_steps[q], *_interval(pi_draws * share),
                                      changed, _clean(pval), _clean(wshare), _clean(eshare)))
    return faults


def _rate_test(model, data: _ChangeData, moved: dict[int, set[int]], q: int, pi_draws: np.ndarray,
               min_baseline: int) -> tuple[float, float, float] | None:
    """(p-value, window share, expected share) of the test that segment ``q``'s faults
    became more frequent in the window; None when no window reading can be tested."""
    P, e, v, window, base = model.params_, data.e, data.v, data.window, data.base
    # A level that moved (a drifting factory) is the factory test's finding;
    # centring those readings on the window's median keeps the shift from
    # reading as a burst of faults. Readings whose level held stay as they are,
    # so a signed fault that became frequent still shows here.
    ew = e[window, q].copy()
    for c in moved.get(q, ()):
        col = ew[:, c]
        if np.isfinite(col).any():
            ew[:, c] = col - np.nanmedian(col)
    resp = _responsibility(ew, v[window, q], float(pi_draws.mean()), P.tauf[:, q].mean(0))
    ok = np.isfinite(resp)
    n = int(ok.sum())
    if not n:
        return None
    obs = float(resp[ok].sum())
    wshare = obs / n
    k = math.ceil(obs - 1e-9) - 1          # P(X >= obs), continuity: ceil
    rb = (_responsibility(e[base, q], v[base, q], float(pi_draws.mean()), P.tauf[:, q].mean(0))
          if base.any() else np.zeros(0))
    okb = np.isfinite(rb)
    nb = int(okb.sum())
    if nb >= min_baseline:
        # against the same model's reading of the batches before the window:
        # X ~ Binomial(n, p), p ~ Beta(kb + 1/2, nb - kb + 1/2) on a quantile grid
        kb = float(rb[okb].sum())
        eshare = kb / nb
        grid = betaincinv(kb + 0.5, nb - kb + 0.5, (np.arange(_GRID) + 0.5) / _GRID)
        pval = float(bdtrc(k, n, grid).mean())
    else:
        # no baseline to speak of: X ~ Binomial(n, pi), averaged over the posterior
        eshare = float(pi_draws.mean())
        pval = float(bdtrc(k, n, pi_draws).mean())
    return pval, wshare, eshare


def _reading_spread(model, q: int, c: int, Gm: np.ndarray) -> float:
    """Robust sd (standardised units) of the training readings at ``(q, c)`` around
    the model's trend: the batch-to-batch spread the gate projection assumes."""
    s, std = model.summaries_, model.std_
    p = model.graph_.process
    ci = p.char_index[model.graph_.modeled[c]]
    z = (s.mean[:, q, ci] - std.centre[q, c]) / std.scale[c]
    z = z - Gm[q, c] * (s.day - std.day_ref) / 100.0
    z = z[np.isfinite(z)]
    if len(z) < 3:
        return 1.0
    return float(1.4826 * np.median(np.abs(z - np.median(z)))) or 1.0
