"""Per-batch numba kernels behind the queries, and their readable NumPy twins.

Private: call them through :mod:`recovery.causal.queries`, which prepares
contiguous arrays. Numba flags come from the project's one config module
(``simulators._config``). ``tests/recovery/causal/test_filter.py`` holds each
kernel equal to its twin.

``kalman``
    A Kalman filter over the inspection segments of one batch, for every
    posterior draw and every mixture component (no fault shift, a fault
    shift in segment ``r``, or ``SEVERAL``: shifts in every segment at once,
    for batches with two faults or more). Observation noise is diagonal, so the update
    processes one gauged characteristic at a time and never inverts a matrix.
    Twin: :func:`kalman_reference`, which conditions the joint Gaussian of all
    readings at once (a different algorithm that must give the same numbers).

``accept_probability``
    P(batch accepted) for many plans and draws from samples of the final
    batch-mean state: a bar is inside every band with probability
    ``prod_c P(bar_c in band_c)`` (normal bar-to-bar spread around the batch
    mean, times the share of crack-free bars), and the batch is accepted when
    at least ``need`` of its ``n_bars`` bars are. Twin:
    :func:`accept_probability_reference` (SciPy).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from simulators._config import NJIT

__all__ = ["kalman", "kalman_reference", "accept_probability", "accept_probability_reference",
           "log_binomial_coefficients", "component_log_weights", "NONE", "SEVERAL"]

LOG_2PI = math.log(2.0 * math.pi)
NONE = -1
"""Mixture component code: no fault shift."""
SEVERAL = -2
"""Mixture component code: a fault shift in every segment at once (two faults or more)."""


def component_log_weights(pi: np.ndarray, segs) -> tuple[np.ndarray, np.ndarray]:
    """Prior log weights of the fault-shift mixture, and the components' codes.

    Segment ``r`` has a fault shift with probability ``pi[..., r]``,
    independently. The components are: none (``NONE``), exactly one shift in
    segment ``r`` for each ``r`` in ``segs``, and, when ``segs`` has two
    segments or more, ``SEVERAL`` with the remaining probability (two shifts or
    more; modelled as a shift in every segment, which is wider than any pair).
    The weights sum to one.

    Returns ``(log_w (..., J), codes (J,))``.
    """
    pi = np.asarray(pi, dtype=np.float64)
    segs = [int(r) for r in segs]
    with np.errstate(divide="ignore"):
        log1m = np.log1p(-pi[..., segs]).sum(axis=-1) if segs else np.zeros(pi.shape[:-1])
        lw = [log1m] + [log1m - np.log1p(-pi[..., r]) + np.log(pi[..., r]) for r in segs]
        codes = [NONE] + segs
        if len(segs) >= 2:
            rest = 1.0 - np.exp(np.logaddexp.reduce(np.stack(lw), axis=0))
            lw.append(np.log(np.clip(rest, 0.0, None)))
            codes.append(SEVERAL)
    return np.stack(lw, axis=-1), np.array(codes, dtype=np.int64)


@njit(**NJIT)
def kalman(A, u, noise_var, m, R, z, obs, extra_var, comp_seg, n_seg):
    """Filter one batch for every draw and mixture component.

    Parameters
    ----------
    A : (S, Q, d, d)
        Carry-over matrices (standardised units).
    u : (S, Q, d)
        Mean injected in each segment (lever effects and drift) for this batch.
    noise_var : (S, Q, d)
        Process-noise variance per segment.
    m : (S, Q, d)
        Mean of gauged pairs at nominal levers.
    R : (S, Q, d)
        Variance of a gauged sample mean.
    z : (Q, d)
        Standardised sample means (ignored where ``obs`` is False).
    obs : (Q, d) bool
    extra_var : (S, Q, d)
        Fault-shift variance, added in segment ``comp_seg[j]`` for component ``j``.
    comp_seg : (J,) int
        ``NONE`` (-1): no fault shift; ``SEVERAL`` (-2): added in every segment.
    n_seg : int
        Segments to run (the state is returned after segment ``n_seg - 1``).

    Returns
    -------
    mean : (S, J, d)
    cov : (S, J, d, d)
    loglik : (S, J)
        Log density of the readings.
    """
    S, Q, d = u.shape
    J = comp_seg.shape[0]
    mean = np.zeros((S, J, d))
    cov = np.zeros((S, J, d, d))
    loglik = np.zeros((S, J))
    x = np.empty(d)
    xn = np.empty(d)
    P = np.empty((d, d))
    T = np.empty((d, d))
    k = np.empty(d)
    for s in range(S):
        for j in range(J):
            x[:] = 0.0
            P[:, :] = 0.0
            ll = 0.0
            for q in range(n_seg):
                Aq = A[s, q]
                for a in range(d):
                    acc = u[s, q, a]
                    for b in range(d):
                        acc += Aq[a, b] * x[b]
                    xn[a] = acc
                x[:] = xn
                # P <- A P A' + diag(noise)
                for a in range(d):
                    for b in range(d):
                        acc = 0.0
                        for c in range(d):
                            acc += Aq[a, c] * P[c, b]
                        T[a, b] = acc
                for a in range(d):
                    for b in range(d):
                        acc = 0.0
                        for c in range(d):
                            acc += T[a, c] * Aq[b, c]
                        P[a, b] = acc
                for a in range(d):
                    P[a, a] += noise_var[s, q, a]
                    if comp_seg[j] == q or comp_seg[j] == SEVERAL:
                        P[a, a] += extra_var[s, q, a]
                for i in range(d):
                    if not obs[q, i]:
                        continue
                    innov = z[q, i] - m[s, q, i] - x[i]
                    Sv = P[i, i] + R[s, q, i]
                    for a in range(d):
                        k[a] = P[a, i] / Sv
                    for a in range(d):
                        x[a] += k[a] * innov
                    for a in range(d):
                        for b in range(d):
                            T[a, b] = k[a] * P[i, b]
                    for a in range(d):
                        for b in range(d):
                            P[a, b] -= T[a, b]
                    ll += -0.5 * (LOG_2PI + math.log(Sv) + innov * innov / Sv)
            mean[s, j] = x
            cov[s, j] = P
            loglik[s, j] = ll
    return mean, cov, loglik


def kalman_reference(A, u, noise_var, m, R, z, obs, extra_var, comp_seg, n_seg):
    """Same contract as :func:`kalman`, by conditioning the joint Gaussian.

    Every reading and the state after segment ``n_seg - 1`` are linear in the
    segments' noises, so they are jointly Gaussian; condition once.
    """
    S, Q, d = u.shape
    J = len(comp_seg)
    mean = np.zeros((S, J, d))
    cov = np.zeros((S, J, d, d))
    loglik = np.zeros((S, J))
    rows = [(q, i) for q in range(n_seg) for i in range(d) if obs[q, i]]
    for s in range(S):
        # Lam[q][r]: response of the state after segment q to segment r's noise
        Lam = [[None] * n_seg for _ in range(n_seg)]
        mu = [None] * n_seg
        prev = np.zeros(d)
        for q in range(n_seg):
            prev = A[s, q] @ prev + u[s, q]
            mu[q] = prev
            for r in range(q + 1):
                Lam[q][r] = np.eye(d) if r == q else A[s, q] @ Lam[q - 1][r]
        for j in range(J):
            V = [np.diag(noise_var[s, r] + (extra_var[s, r] if comp_seg[j] in (r, SEVERAL) else 0.0))
                 for r in range(n_seg)]
            last = n_seg - 1

            def c(q1, q2):
                return sum(Lam[q1][r] @ V[r] @ Lam[q2][r].T for r in range(min(q1, q2) + 1))

            if rows:
                Syy = np.array([[c(q1, q2)[i1, i2] for (q2, i2) in rows] for (q1, i1) in rows])
                Syy += np.diag([R[s, q, i] for q, i in rows])
                Sxy = np.array([c(last, q)[:, i] for q, i in rows]).T
                y = np.array([z[q, i] - m[s, q, i] - mu[q][i] for q, i in rows])
                sol = np.linalg.solve(Syy, y)
                mean[s, j] = mu[last] + Sxy @ sol
                cov[s, j] = c(last, last) - Sxy @ np.linalg.solve(Syy, Sxy.T)
                _, logdet = np.linalg.slogdet(Syy)
                loglik[s, j] = -0.5 * (len(rows) * LOG_2PI + logdet + y @ sol)
            else:
                mean[s, j] = mu[last]
                cov[s, j] = c(last, last)
    return mean, cov, loglik


def log_binomial_coefficients(n: int) -> np.ndarray:
    """``log C(n, i)`` for ``i = 0 .. n``."""
    i = np.arange(n + 1)
    return np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in i])


@njit(**NJIT)
def _tail(p, n, need, logc):
    """P(Binomial(n, p) >= need)."""
    if p <= 0.0:
        return 1.0 if need <= 0 else 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    acc = 0.0
    for i in range(need, n + 1):
        acc += math.exp(logc[i] + i * lp + (n - i) * lq)
    return acc


@njit(**NJIT)
def accept_probability(X0, Kfut, phi, base, scale, lower, upper, sbar, use, crack_ok,
                       n_bars, need, logc):
    """P(accept) for every plan and draw, averaged over state samples.

    Parameters
    ----------
    X0 : (S, K, d)
        Samples of the final standardised state without the plan's part.
    Kfut : (S, d, F)
        Effect of the plan's lever features on the final standardised state.
    phi : (P, F)
        Lever features of each plan.
    base : (S, d)
        Physical value of standardised 0 at the end (``centre + scale * m``).
    scale : (d,)
    lower, upper : (d,)
        Final bands (physical units).
    sbar : (S, d)
        Bar-to-bar sd at the end (physical units).
    use : (d,) bool
        Characteristics whose band counts.
    crack_ok : (S, K)
        Share of crack-free bars in each sample (1 without a crack characteristic).
    n_bars, need : int
    logc : (n_bars + 1,)

    Returns
    -------
    ndarray (P, S)
    """
    S, K, d = X0.shape
    P = phi.shape[0]
    F = phi.shape[1]
    out = np.zeros((P, S))
    shift = np.empty(d)
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    for p in range(P):
        for s in range(S):
            for c in range(d):
                acc = 0.0
                for f in range(F):
                    acc += Kfut[s, c, f] * phi[p, f]
                shift[c] = acc
            tot = 0.0
            for k in range(K):
                pb = crack_ok[s, k]
                for c in range(d):
                    if not use[c]:
                        continue
                    x = base[s, c] + scale[c] * (X0[s, k, c] + shift[c])
                    sd = sbar[s, c]
                    if sd <= 0.0:
                        inside = 1.0 if lower[c] <= x <= upper[c] else 0.0
                    else:
                        hi = 0.5 * math.erfc(-(upper[c] - x) / sd * inv_sqrt2)
                        lo = 0.5 * math.erfc(-(lower[c] - x) / sd * inv_sqrt2)
                        inside = hi - lo
                    pb *= inside
                tot += _tail(pb, n_bars, need, logc)
            out[p, s] = tot / K
    return out


@njit(**NJIT)
def band_distance(X0, Kfut, phi, base, scale, lower, upper, use):
    """Expected distance of the final batch means outside their bands, per plan.

    Summed over the characteristics that count, in band widths, averaged over
    draws and state samples; 0 when every mean lies inside its band. Smooth
    where P(accept) is flat at 0, so a search can climb towards acceptance.

    Returns
    -------
    ndarray (P,)
    """
    S, K, d = X0.shape
    P = phi.shape[0]
    F = phi.shape[1]
    out = np.zeros(P)
    for p in range(P):
        tot = 0.0
        for s in range(S):
            for c in range(d):
                if not use[c]:
                    continue
                acc = 0.0
                for f in range(F):
                    acc += Kfut[s, c, f] * phi[p, f]
                width = upper[c] - lower[c]
                for k in range(K):
                    x = base[s, c] + scale[c] * (X0[s, k, c] + acc)
                    if x > upper[c]:
                        tot += (x - upper[c]) / width
                    elif x < lower[c]:
                        tot += (lower[c] - x) / width
        out[p] = tot / (S * K)
    return out


def accept_probability_reference(X0, Kfut, phi, base, scale, lower, upper, sbar, use, crack_ok,
                                 n_bars, need, logc=None):
    """Same contract as :func:`accept_probability`, vectorised with SciPy."""
    from scipy.stats import binom, norm

    x = base[None, :, None, :] + scale * (X0[None] + np.einsum("sdf,pf->psd", Kfut, phi)[:, :, None, :])
    sd = sbar[None, :, None, :]
    inside = norm.cdf((upper - x) / sd) - norm.cdf((lower - x) / sd)
    inside = np.where(use, inside, 1.0)
    pb = inside.prod(axis=-1) * crack_ok[None]
    return binom.sf(need - 1, n_bars, np.clip(pb, 0.0, 1.0)).mean(axis=-1)
