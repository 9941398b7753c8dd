"""The conjugate components fitted apart from the MCMC: the bar-to-bar spread
(:class:`BarSpread`) and the crack model (:class:`CrackModel`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recovery.causal.summaries import Summaries
from simulators.definition import Process

__all__ = ["BarSpread", "CrackModel"]


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

