"""Preposterior analysis on posterior draws: simulated gauge readings, their
likelihood, and the value of deciding after reading them.

Shared by the per-batch analysis (``recovery measure``, :mod:`recovery.voi.batch`)
and anything else that weighs an extra measurement against deciding now.

The posterior is a set of ``S`` joint draws of the batch's state (each a batch
of bars). A measurement is valued in four moves:

1. the reading the gauge would give is simulated from each draw ``i`` taken as
   the truth (``n`` bars picked without replacement, each with the gauge's
   noise): :func:`simulate_readings`;
2. the posterior is updated on each reading with a full update: the draws are
   reweighted by the reading's likelihood under each of them
   (:func:`reading_loglik`), which keeps whatever shape the posterior has
   (fault mixtures, correlations between characteristics, a share of cracked
   bars), with no normal approximation of the posterior;
3. the decision is re-made on the reweighted draws (:func:`decide`, the
   rule of :func:`recovery.agents.decision.choose_action` over a set of options);
4. the chosen option is scored on draw ``i`` itself (:func:`preposterior_value`).

Draw ``i`` is left out of its own decision, with the reading and without: its
scored value includes rollout noise that no reading can reveal, and letting a
decision see it would make it look better than it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln
from scipy.stats import hypergeom, norm

__all__ = ["PreposteriorValue", "simulate_readings", "reading_loglik", "posterior_weights", "decide",
           "preposterior_value", "resample"]


def simulate_readings(bars: np.ndarray, n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gauge readings of ``n`` bars of each batch, as the simulator's gauge gives them.

    Parameters
    ----------
    bars : ndarray (S, N)
        One characteristic of every bar of ``S`` batches (physical unit).
    n : int
        Bars gauged per batch, ``1 <= n <= N``, picked without replacement.
    sigma : float
        Gauge noise (standard deviation, the characteristic's unit).
    rng : Generator

    Returns
    -------
    ndarray (S, n)
    """
    S, N = bars.shape
    if not 1 <= n <= N:
        raise ValueError(f"sample must be between 1 and the {N} bars of a batch, got {n}")
    pick = rng.random((S, N)).argsort(axis=1)[:, :n]
    return np.take_along_axis(bars, pick, axis=1) + sigma * rng.standard_normal((S, n))


def reading_loglik(readings: np.ndarray, bars: np.ndarray, sigma: float, *, binary: bool = False) -> np.ndarray:
    """Log-likelihood of each reading under each draw's batch of bars.

    Continuous characteristics: the reading's sample mean and sample variance
    are its sufficient statistics under a normal spread of bars, so the
    likelihood is that of the mean (the draw's batch mean; variance of a mean
    of ``n`` of the ``N`` bars drawn without replacement, plus the gauge noise)
    times that of the sample variance (scaled chi-square with ``n - 1``
    degrees of freedom around the draw's bar variance plus the gauge's).
    A binary characteristic (a crack, gauged without noise): the hypergeometric
    probability of the count of cracked bars in the sample.

    Parameters
    ----------
    readings : ndarray (R, n)
    bars : ndarray (S, N)
        The same characteristic of every bar of each draw.
    sigma : float
        Gauge noise (standard deviation).
    binary : bool
        0/1 characteristic (count likelihood).

    Returns
    -------
    ndarray (R, S)
    """
    readings = np.atleast_2d(np.asarray(readings, dtype=np.float64))
    R, n = readings.shape
    S, N = bars.shape
    if binary:
        k = np.rint(readings).sum(axis=1)                           # cracked bars read
        K = np.rint(bars).sum(axis=1)                               # cracked bars in each draw
        ll = hypergeom.logpmf(k[:, None], N, K[None, :], n)
        return np.where(np.isfinite(ll), ll, -np.inf)
    mu = bars.mean(axis=1)
    s2 = bars.var(axis=1)                                           # the batch's own bars: ddof 0
    # A floor so that identical bars and a perfect gauge still give a density.
    floor = (1e-9 + 1e-6 * float(np.std(bars))) ** 2
    fpc = (N - n) / (N - 1) if N > 1 else 0.0
    var_mean = np.maximum(s2 * fpc / n + sigma ** 2 / n, floor)
    ybar = readings.mean(axis=1)
    ll = -0.5 * ((ybar[:, None] - mu[None, :]) ** 2 / var_mean[None, :] + np.log(2 * np.pi * var_mean)[None, :])
    if n > 1:
        tau2 = np.maximum(s2 + sigma ** 2, floor)                   # one reading's variance
        q = ((readings - ybar[:, None]) ** 2).sum(axis=1)           # (n - 1) * sample variance
        dof = n - 1
        # density of q when q / tau2 ~ chi-square(dof)
        x = q[:, None] / tau2[None, :]
        ll = ll + ((dof / 2 - 1) * np.log(np.maximum(x, 1e-300)) - x / 2 - (dof / 2) * np.log(2.0)
                   - gammaln(dof / 2) - np.log(tau2)[None, :])
    return ll


def posterior_weights(loglik: np.ndarray, *, leave_one_out: bool = True) -> np.ndarray:
    """Normalised importance weights of the draws given each reading.

    ``loglik[i, j]`` is the log-likelihood of reading ``i`` under draw ``j``; the
    draws are posterior samples, so their prior weights are equal. With
    ``leave_one_out`` (square ``loglik``, reading ``i`` simulated from draw
    ``i``), draw ``i`` gets no weight for its own reading. A reading that no
    draw explains (every weight zero) leaves the posterior as it was.

    Returns
    -------
    ndarray (R, S), rows summing to 1
    """
    ll = np.array(loglik, dtype=np.float64)
    if leave_one_out:
        if ll.shape[0] != ll.shape[1]:
            raise ValueError("leave_one_out needs one reading per draw (a square loglik)")
        np.fill_diagonal(ll, -np.inf)
    dead = ~np.isfinite(ll).any(axis=1)
    if dead.any():
        ll[dead] = 0.0
        if leave_one_out:
            idx = np.flatnonzero(dead)
            ll[idx, idx] = -np.inf
    w = np.exp(ll - ll.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def decide(expected: np.ndarray, kinds, *, min_gain: float = 1.0) -> np.ndarray:
    """The option chosen from expected net values, by the rule of ``choose_action``.

    The best intervention must beat the best option that keeps the plan
    ("continue") by ``min_gain`` to be considered; then the highest expected
    value wins (ties go to the earlier option).

    Parameters
    ----------
    expected : ndarray (..., K)
        Expected net value of each option (currency).
    kinds : sequence of str (K,)
        ``"continue"``, ``"intervene"`` or ``"scrap"`` for each option.
    min_gain : float
        Currency.

    Returns
    -------
    ndarray of int (...)
    """
    e = np.array(expected, dtype=np.float64)
    kinds = np.asarray(kinds)
    cont, interv = kinds == "continue", kinds == "intervene"
    if cont.any() and interv.any():
        best_cont = e[..., cont].max(axis=-1, keepdims=True)
        e[..., interv] = np.where(e[..., interv] > best_cont + min_gain, e[..., interv], -np.inf)
    return np.argmax(e, axis=-1)


@dataclass(frozen=True)
class PreposteriorValue:
    """The value of deciding after a reading, against deciding now.

    Attributes
    ----------
    evsi : float
        Expected value of sample information (currency).
    se : float
        Monte-Carlo standard error of ``evsi``: the standard deviation of the
        paired per-draw differences over the square root of the draws.
    low, high : float
        ``evsi -/+ z * se`` (the normal interval of the Monte-Carlo mean).
    choice : ndarray of int (S,)
        The option chosen after the reading simulated from each draw.
    now : ndarray of int (S,)
        The option chosen without the reading, for each draw (leave-one-out: the
        same for nearly every draw).
    p_change : float
        Share of draws whose reading changes the decision.
    """

    evsi: float
    se: float
    low: float
    high: float
    choice: np.ndarray
    now: np.ndarray
    p_change: float


def preposterior_value(after: np.ndarray, before: np.ndarray, loglik: np.ndarray, kinds, *,
                       min_gain: float = 1.0, prob: float = 0.94) -> PreposteriorValue:
    """EVSI of a reading by preposterior analysis on posterior draws.

    Both arms are decided the same way, leaving draw ``i`` out of its own
    decision: without the reading on the equally weighted other draws, with it
    on the other draws reweighted by the reading's likelihood. A reading that
    carries no information is then worth exactly zero, and a reading's value is
    not inflated (or deflated) by the rollout noise a decision was picked on.

    Parameters
    ----------
    after : ndarray (K, S)
        Net value (currency) of each option decided after the reading, scored on each
        draw (a rollout from the draw, common random numbers across options).
    before : ndarray (K, S)
        Net value of each option decided now, on the same rollouts (it differs from
        ``after`` where waiting for the reading costs, e.g. a later scrap saves less).
    loglik : ndarray (S, S)
        ``loglik[i, j]``: log-likelihood of the reading simulated from draw ``i``
        under draw ``j`` (:func:`reading_loglik`).
    kinds : sequence of str (K,)
        The kind of each option (see :func:`decide`).
    min_gain : float
    prob : float
        Coverage of the interval.

    Returns
    -------
    PreposteriorValue

    Examples
    --------
    Two equally likely states (50 draws each); option 0 pays 10 in state 0,
    option 1 pays 8 in state 1. A reading that tells the states apart is worth
    the expected value of perfect information, 9 - 5:

    >>> state = np.repeat([0, 1], 50)
    >>> after = np.stack([np.where(state == 0, 10.0, 0.0), np.where(state == 1, 8.0, 0.0)])
    >>> ll = np.where(state[:, None] == state[None, :], 0.0, -np.inf)
    >>> r = preposterior_value(after, after, ll, ["continue", "intervene"], min_gain=0.0)
    >>> float(r.evsi)
    4.0
    """
    after = np.asarray(after, dtype=np.float64)
    before = np.asarray(before, dtype=np.float64)
    K, S = after.shape
    idx = np.arange(S)
    w = posterior_weights(loglik)
    choice = decide(w @ after.T, kinds, min_gain=min_gain)
    # without the reading: the mean over the other draws
    loo = (before.sum(axis=1)[None, :] - before.T) / max(S - 1, 1)
    now = decide(loo, kinds, min_gain=min_gain)
    d = after[choice, idx] - before[now, idx]
    evsi = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(S)) if S > 1 else 0.0
    z = float(norm.ppf(0.5 + prob / 2))
    return PreposteriorValue(evsi, se, evsi - z * se, evsi + z * se, choice, now,
                             float((choice != now).mean()))


def resample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draw indices by systematic resampling of normalised ``weights``."""
    w = np.asarray(weights, dtype=np.float64)
    c = np.cumsum(w / w.sum())
    c[-1] = 1.0
    u = (rng.random() + np.arange(n)) / n
    return np.searchsorted(c, u, side="right").clip(0, len(w) - 1)
