"""Robust widening: the open-faced sandwich adjustment of the posterior draws
for model misspecification (:func:`robust_adjust`)."""

from __future__ import annotations

import math

import numpy as np

from recovery.causal.layout import Layout
from recovery.causal.likelihood import FitData, loglik_terms

__all__ = ["prior_precision", "scores", "robust_adjust"]


def prior_precision(layout: Layout, at: np.ndarray, prior) -> np.ndarray:
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


def scores(theta: np.ndarray, fd: FitData, layout: Layout, step: np.ndarray, *, form: str = "auto") -> np.ndarray:
    """Each batch's score (gradient of its log-likelihood term) at ``theta``, by
    central differences with the given step per parameter: ``(n_batches, P)``.
    ``form``: the likelihood's (:func:`~recovery.causal.likelihood.loglik_terms`)."""
    out = None
    for k in range(len(theta)):
        e = np.zeros(len(theta))
        e[k] = step[k]
        col = (loglik_terms(theta + e, fd, layout, form=form)
               - loglik_terms(theta - e, fd, layout, form=form)) / (2.0 * step[k])
        if out is None:
            out = np.empty((len(col), len(theta)))
        out[:, k] = col
    return out


def robust_adjust(theta: np.ndarray, fd: FitData, layout: Layout, prior=None, *,
                  form: str = "auto") -> tuple[np.ndarray, np.ndarray]:
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
    fd : FitData
    layout : Layout
    prior : (mean, cov) or None
        An update's prior; ``None``: the layout's priors.
    form : {"auto", "dense"}
        The likelihood's form (``FitConfig.likelihood``); the same values either way.

    Returns
    -------
    adjusted : ndarray (S, P)
    ratio : ndarray (P,)
        Adjusted over original posterior sd, per parameter.
    """
    mu = theta.mean(axis=0)
    Sig = np.cov(theta, rowvar=False)
    n = len(mu)
    S = scores(mu, fd, layout, 1e-3 * np.sqrt(np.maximum(np.diag(Sig), 1e-24)), form=form)
    S = S - S.mean(axis=0)
    M = prior_precision(layout, mu, prior) + S.T @ S
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

