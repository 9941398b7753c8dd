"""How the causal model fits (:class:`FitConfig`) and its default priors (:class:`PriorConfig`).

Plain frozen data: saved verbatim in ``model.json`` and read back by
:mod:`recovery.causal.persistence`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["FitConfig", "PriorConfig"]


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
    warm_tune : int or None
        NUTS by nutpie: tuning steps per chain when an earlier fit of the same
        process structure left its adapted state in the fit cache
        (:mod:`recovery.causal.compiled`; a healthy fit leaves its posterior
        mean and sd and its step size there). Such a fit samples in
        coordinates scaled by that posterior sd, starts at that posterior
        mean and so needs fewer tuning steps; the posterior is the same, but
        the draws are not those of a cold fit with the same seed, and they
        depend on what the cache holds. So it is off by default (``None``:
        always ``tune`` steps from the prior means), and a refit asks for it
        (``recovery fit --warm-start``): the same seed then gives the same
        result only from the same cache.
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
    likelihood : {"auto", "dense"}
        ``auto`` evaluates the likelihood factorised along the causal graph,
        one normal per reading given its parents, whenever that is exact (every
        reading exact: one bar per batch, or all bars gauged, and no gauge
        sigma; see :func:`recovery.causal.likelihood.dag_index`), and as the
        multivariate normal of a batch's readings otherwise. The two are the
        same density; ``dense`` forces the second (the reference, and slow for
        wide lines: a Cholesky factor of the readings' covariance per step).
    """

    method: Literal["nuts", "advi"] = "nuts"
    sampler: Literal["auto", "nutpie", "pymc"] = "auto"
    draws: int = 500
    tune: int = 500
    chains: int = 2
    warm_tune: int | None = None
    advi_steps: int = 20_000
    advi_learning_rate: float = 0.02
    seed: int = 0
    keep_draws: int = 1000
    robust: Literal["sandwich", "none"] = "sandwich"
    likelihood: Literal["auto", "dense"] = "auto"


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

