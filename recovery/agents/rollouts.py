"""Simulator rollouts from what the causal model knows about one batch.

The planner scores a lever plan by Monte Carlo rollouts of the numba simulator
of the process definition, started from posterior draws of the batch's state:

1. ``CausalModel.state_draws`` gives joint draws of the batch-mean state at the
   batch's last inspection (parameter and state uncertainty, correlations
   between characteristics, the fault-shift mixture);
2. each draw becomes a batch of bars: a healthy batch simulated to that step
   on the batch's production day (bar-to-bar spread, and the characteristics
   the model does not track, such as bend angles not made yet) whose modelled
   characteristics are shifted to the drawn batch means, with cracked bars at
   the drawn share;
3. where the model's drawn batch means contradict the batch's own sample (more
   than 4 sd apart, now or at an earlier inspection: the model's additive lever
   response can miss a large correction of a large deviation that the plant's
   physics makes), that characteristic starts from the sample instead
   (:func:`sample_conflicts`);
4. every candidate plan is rolled out once from each of these batches with the
   same seed (common random numbers), future faults and partner offsets drawn
   at their catalogue rates.

With a calibration (``params``: one physics draw per state draw, from
:class:`recovery.calibration.PhysicsPosterior`), draw ``i``'s healthy batch and
its rollouts run with physics draw ``i``: the state and the physics are drawn
jointly, so P(accept) includes what is not known about the plant's physics.
Without one, every rollout runs with the process file's physics.

So the rollouts put the process physics (the simulator) together with what
the data say about this batch (the posterior); the oracle does the same from
the true bars instead of draws, and the gap between the two is what not
knowing the state costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recovery.agents.oracle import plan_value
from simulators.process import Conditions, Simulator

__all__ = ["PosteriorBars", "posterior_bars", "rollout_objective", "accept_interval", "sample_conflicts",
           "spread_posterior"]


@dataclass(frozen=True)
class PosteriorBars:
    """Starting bars for rollouts: one batch of bars per posterior draw.

    Attributes
    ----------
    state : ndarray (n * bars_per_batch, n_chars)
        Bars after ``step``, draw after draw.
    n : int
        Draws.
    step : int
        The inspection step the state refers to (rollouts start after it).
    conditions : Conditions
        One batch on the batch's production day (rollouts redraw its future).
    out_of_range : bool
        The batch lies outside what the model's training data cover.
    reasons : tuple of str
    params : ndarray (n, n_steps, MAX_PARAMS), optional
        The physics each draw runs with (``Simulator.physics``); None: the file's.
    from_sample : tuple of str
        Characteristics whose drawn means contradicted the last sample and were
        replaced by the sample's (:func:`sample_conflicts`), one note each.
    """

    state: np.ndarray
    n: int
    step: int
    conditions: Conditions
    out_of_range: bool
    reasons: tuple[str, ...]
    params: np.ndarray | None = None
    from_sample: tuple[str, ...] = ()


def posterior_bars(sim: Simulator, model, history: pd.DataFrame, n: int, *, seed: int = 0,
                   params: np.ndarray | None = None) -> PosteriorBars:
    """Turn ``n`` posterior draws of a batch's state into bars to roll out (see module doc).

    Parameters
    ----------
    sim : Simulator
        Simulator of the model's process.
    model : recovery.causal.model.CausalModel
        Fitted.
    history : DataFrame
        One batch's step data (schema).
    n : int
    seed : int
    params : ndarray (n, n_steps, MAX_PARAMS), optional
        One physics draw per state draw (``Simulator.physics`` of calibration
        draws); default: the file's physics for all.

    Returns
    -------
    PosteriorBars
    """
    p = sim.process
    if params is not None and len(params) != n:
        raise ValueError(f"params must hold one physics draw per state draw ({n}), got {len(params)}")
    sets = None if params is None else np.arange(n)
    draws = model.state_draws(history, n, seed=seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0B4A]))
    cond = sim.sample_conditions(n, rng, time=np.full(n, draws.day), faults=False)
    st = sim.new_state(n)
    sim.run(st, 0, draws.step, p.nominal_plan(), cond, rng, params=params, param_set=sets)
    bars = st.reshape(n, p.bars_per_batch, p.n_chars)
    own = bars.mean(axis=1)                       # (n, n_chars) each healthy batch's own means
    healthy = own.mean(axis=0)
    spread = _spread_factors(p, history, draws, bars, rng)
    targets = {p.char_index[name]: draws.values[:, c] if draws.absolute[c] else healthy[p.char_index[name]]
               + draws.values[:, c] for c, name in enumerate(draws.names)}
    earlier = _earlier_conflicts(p, model, history, draws, n, seed)
    conflicts = sample_conflicts(p, history, draws.step, targets)
    # Once the model has missed a characteristic's sample on this batch, its filter is not
    # trusted for it again: gauged now, the rollouts start from the sample whatever the gap.
    again = [ci for ci in earlier if ci not in conflicts]
    conflicts.update(sample_conflicts(p, history, draws.step, {ci: targets[ci] for ci in again}, z_max=0.0))
    notes = []
    for ci, target in targets.items():
        f, extra = spread.get(ci, (None, None))
        if f is not None:
            bars[:, :, ci] = own[:, ci, None] + f[:, None] * (bars[:, :, ci] - own[:, ci, None])
        if ci in conflicts:
            # The model's state contradicts the batch's own sample: start from the sample
            # (its mean and sampling error) instead (see sample_conflicts).
            xbar, se, z = conflicts[ci]
            notes.append(f"{p.characteristics[ci].name} at step {draws.step}: the model's "
                         f"{float(target.mean()):.4g} is {abs(z):.1f} sd from the sample's {xbar:.4g}; "
                         f"rolled out from the sample")
            target = xbar + se * rng.standard_normal(n)
        elif f is not None:
            target = target + extra
        if ci in earlier and ci not in conflicts:
            # gauged last at an earlier inspection where the model already missed the
            # sample: the model carried that miss forward, so take it out again
            shift, se, z, s_step = earlier[ci]
            notes.append(f"{p.characteristics[ci].name} at step {s_step}: the model was {abs(z):.1f} sd "
                         f"from the sample; its state since is shifted by {shift:+.4g}")
            target = target + shift + se * rng.standard_normal(n)
        bars[:, :, ci] += (target - own[:, ci])[:, None]
    crack_roles = [c.name for c in p.characteristics if c.role == "crack"]
    if draws.crack is not None and crack_roles:
        ci = p.char_index[crack_roles[0]]
        k = np.rint(draws.crack * p.bars_per_batch).astype(np.int64)
        order = rng.random((n, p.bars_per_batch)).argsort(axis=1)
        bars[:, :, ci] = (order < k[:, None]).astype(np.float64)
    one = sim.sample_conditions(1, 0, time=np.array([draws.day]), faults=False)
    return PosteriorBars(np.ascontiguousarray(bars.reshape(-1, p.n_chars)), n, draws.step, one,
                         draws.out_of_range, draws.reasons, params, tuple(notes))


def _earlier_conflicts(p, model, history: pd.DataFrame, draws, n: int, seed: int
                       ) -> dict[int, tuple[float, float, float, int]]:
    """Characteristics whose sample the model missed (:func:`sample_conflicts`) at an
    inspection before the draws' step: the miss is still in the state it carried since.

    Returns ``{char column: (sample mean - model mean, the sample's standard error, z, step)}``
    at the characteristic's *last* gauging before the draws' step (whatever the gap there),
    for those that conflicted at any earlier one.
    """
    m = history[(history["kind"].astype(str) == "measurement") & (history["step"] < draws.step)]
    if m.empty:
        return {}
    gauged: dict[int, list[int]] = {}
    for (step, name), _ in m.groupby([m["step"], m["variable"].astype(str)]):
        ci = p.char_index.get(name)
        if ci is not None and name in draws.names and p.characteristics[ci].role != "crack":
            gauged.setdefault(ci, []).append(int(step))
    seen: dict[int, tuple[float, float, float, int]] = {}
    hit: set[int] = set()
    for s in sorted({st for sts in gauged.values() for st in sts}):
        cis = [ci for ci, sts in gauged.items() if s in sts]
        then = model.state_draws(history[history["step"] <= s], n, seed=seed)
        idx = {ci: then.names.index(p.characteristics[ci].name) for ci in cis}
        targets = {ci: then.values[:, j] for ci, j in idx.items() if then.absolute[j]}
        for ci, (xbar, se, z) in sample_conflicts(p, history, s, targets, z_max=0.0).items():
            seen[ci] = (xbar - float(targets[ci].mean()), se, z, s)
            hit |= {ci} if abs(z) > CONFLICT_Z else set()
    return {ci: seen[ci] for ci in hit}


#: How far (in standard deviations of the difference) the sample's mean may lie from the
#: model's state draws before the rollouts start from the sample instead. At 4 sd a model
#: that is right about the batch is overruled about once in 16,000 characteristics.
CONFLICT_Z = 4.0


def sample_conflicts(p, history: pd.DataFrame, step: int, targets: dict[int, np.ndarray], *,
                     z_max: float = CONFLICT_Z) -> dict[int, tuple[float, float, float]]:
    """Characteristics whose drawn batch means contradict the batch's own last sample.

    The causal model's lever responses are additive, the plant's physics often
    multiplicative: after a large correction of a large deviation (a hard
    straightening of a badly bowed batch) the model's prediction can sit far
    from what the next sample reads, and its filter, trusting the prediction,
    keeps the state there (plant C, straightening misadjustment: the model
    drew 0.42 +- 0.016 mm/m where 8 bars read 0.31 and the truth was 0.32).
    The sample's mean ``x`` of ``k`` bars has sampling error ``se = s / sqrt(k)``
    (``s`` its standard deviation, the gauge included); a characteristic
    conflicts when ``|x - mean(draws)| > z_max * sqrt(var(draws) + se^2)``.

    Parameters
    ----------
    p : Process
    history : DataFrame
        The batch's step data.
    step : int
        The inspection the draws refer to.
    targets : dict
        ``{char column: drawn batch means (n,)}`` in the characteristic's unit.
    z_max : float

    Returns
    -------
    dict
        ``{char column: (sample mean, its standard error, z)}`` for the conflicts.
    """
    m = history[(history["kind"].astype(str) == "measurement") & (history["step"] == step)]
    out: dict[int, tuple[float, float, float]] = {}
    if m.empty:
        return out
    for name, vals in m.groupby(m["variable"].astype(str))["value"]:
        ci = p.char_index.get(name)
        if ci is None or ci not in targets or p.characteristics[ci].role == "crack":
            continue
        x = vals.to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if len(x) < 3:      # too few bars to say what the batch's spread is
            continue
        t = targets[ci]
        se = max(float(x.std(ddof=1)), p.characteristics[ci].gauge_sigma) / np.sqrt(len(x))
        z = (float(x.mean()) - float(t.mean())) / np.sqrt(float(t.var()) + se ** 2 + 1e-300)
        if abs(z) > z_max:
            out[ci] = (float(x.mean()), se, z)
    return out


#: Prior probability that a flagged batch's bars are scattered beyond the healthy spread
#: for one characteristic at an inspection (:func:`spread_posterior`). On the flagged batches
#: of plants B and C and of the built-in file (300 batches each), 6-7% of the gauged
#: characteristics at detection have a bar variance more than twice the healthy one, nearly all
#: after an over-temperature or a glazed polishing wheel (BENCHMARKS.md, issue 18, "Why the
#: planner was under-confident").
P_SCATTERED = 0.1
#: Largest bar variance a scattered batch may have, as a multiple of the healthy one.
MAX_SPREAD_RATIO = 100.0


def spread_posterior(s2: float, k: int, var_h: float, gauge_var: float, *, p_scattered: float = P_SCATTERED,
                     max_ratio: float = MAX_SPREAD_RATIO, n_grid: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of a batch's bar variance, as a ratio to the healthy one, from one sample.

    Two hypotheses: the batch has the healthy bar spread (ratio 1, prior
    probability ``1 - p_scattered``), or a fault scattered its bars (ratio
    log-uniform on ``[1, max_ratio]``). The sample variance ``s2`` of ``k``
    readings (gauge included) has ``(k - 1) s2 / (ratio var_h + gauge_var) ~ chi2(k - 1)``.

    Why not a conjugate prior on the variance alone: with 5 bars a scaled
    inverse chi-square posterior (3 pseudo-observations at the healthy
    variance, the earlier rule) spreads every gauged characteristic's variance
    over a factor of three or more even when the batch is healthy, as most are;
    averaged over those draws the share of bars in band falls, and the planner's
    P(accept) sat 0.05 below the plant's on plant B (BENCHMARKS.md, issue 18).
    A sample that looks healthy now keeps the healthy spread, and one that looks
    scattered (an over-temperature) still widens it.

    Parameters
    ----------
    s2 : float
        Sample variance of the readings (ddof 1), in the characteristic's unit squared.
    k : int
        Readings (>= 2).
    var_h : float
        Healthy bar-to-bar variance (gauge not included), unit squared; > 0.
    gauge_var : float
        Gauge variance, unit squared.
    p_scattered : float
        Prior probability of the scattered hypothesis, in [0, 1].
    max_ratio : float
        Upper end of the scattered hypothesis' ratio (> 1).
    n_grid : int
        Grid points of the scattered hypothesis.

    Returns
    -------
    ratio : ndarray (n_grid + 1,)
        Variance ratios; ``ratio[0] == 1`` is the healthy hypothesis.
    prob : ndarray (n_grid + 1,)
        Posterior probabilities (sum 1).

    Raises
    ------
    ValueError
        ``k < 2``, ``var_h <= 0``, ``p_scattered`` outside [0, 1] or ``max_ratio <= 1``.
    """
    from scipy.stats import chi2

    if k < 2 or not var_h > 0:
        raise ValueError(f"need k >= 2 readings and a positive healthy variance, got k={k}, var_h={var_h}")
    if not 0.0 <= p_scattered <= 1.0 or not max_ratio > 1.0:
        raise ValueError(f"p_scattered must lie in [0, 1] and max_ratio above 1, got {p_scattered}, {max_ratio}")
    ratio = np.concatenate([[1.0], np.exp(np.linspace(0.0, np.log(max_ratio), n_grid))])
    with np.errstate(divide="ignore"):
        prior = np.log(np.concatenate([[1.0 - p_scattered], np.full(n_grid, p_scattered / n_grid)]))
    scale = (ratio * var_h + gauge_var) / (k - 1)
    lp = prior + chi2.logpdf(max(s2, 0.0) / scale, k - 1) - np.log(scale)
    lp -= lp.max()
    w = np.exp(lp)
    return ratio, w / w.sum()


def _spread_factors(p, history: pd.DataFrame, draws, bars: np.ndarray, rng: np.random.Generator
                    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Bar-to-bar spread of this batch where its last sample says it is not the healthy one.

    The causal model tracks batch means with the healthy bar spread. Some
    faults also scatter the bars (an over-temperature distorts bars unevenly),
    and then a sample of a few bars pins the batch mean down less than the
    model assumes. For each characteristic gauged at the draws' inspection,
    the batch's bar variance is drawn from :func:`spread_posterior` (healthy
    or scattered, as the sample's spread says); the bars' deviations are
    scaled to it, and the batch-mean draw gets the extra sampling error the
    wider spread implies.

    Returns ``{char column: (scale factor (n,), extra mean noise (n,))}``.
    """
    h = history
    m = h[(h["kind"].astype(str) == "measurement") & (h["step"] == draws.step)]
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if m.empty:
        return out
    n_draws, N = bars.shape[0], bars.shape[1]
    for name, vals in m.groupby(m["variable"].astype(str))["value"]:
        ci = p.char_index.get(name)
        x = vals.to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if ci is None or name not in draws.names or len(x) < 2 or p.characteristics[ci].role == "crack":
            continue
        var_h = float(bars[:, :, ci].var(axis=1, ddof=1).mean())
        if var_h <= 0:
            continue
        k = len(x)
        ratio, prob = spread_posterior(float(x.var(ddof=1)), k, var_h, p.characteristics[ci].gauge_sigma ** 2)
        r = ratio[rng.choice(len(ratio), size=n_draws, p=prob)]
        f = np.sqrt(r)
        extra = np.sqrt((r - 1.0) * var_h * (1.0 / k - 1.0 / N)) * rng.standard_normal(n_draws)
        out[ci] = (f, extra)
    return out


def rollout_objective(sim: Simulator, start: PosteriorBars, *, seed: int = 0):
    """``objective(plans) -> (value, p_accept, score)`` by rollouts from ``start``.

    ``value`` is expected money; ``score`` adds the share of bars inside each
    characteristic's band (capped at the acceptance level), so the search has
    a slope to climb while no candidate is accepted yet (as the oracle ranks).
    """
    p = sim.process
    level = p.acceptance_level
    bonus = 0.5 * p.economics.batch_value

    def objective(plans: np.ndarray):
        ins, per = sim.rollout(start.state, start.step, plans, start.n, seed, start.conditions,
                               per_characteristic=True, params=start.params)
        value, acc = plan_value(sim, ins, plans)
        return value, acc, value + bonus * np.minimum(per, level).mean(axis=(1, 2))

    return objective


def accept_interval(p_accept: float, n: int, prob: float = 0.94) -> tuple[float, float]:
    """Equal-tailed ``prob`` interval of P(accept) from ``n`` rollouts (Jeffreys prior;
    the bound is 0 or 1 when no rollout, or every rollout, ended accepted)."""
    from scipy.stats import beta

    k = p_accept * n
    a, b = k + 0.5, n - k + 0.5
    lo = 0.0 if k <= 0 else float(beta.ppf((1 - prob) / 2, a, b))
    hi = 1.0 if k >= n else float(beta.ppf((1 + prob) / 2, a, b))
    return lo, hi
