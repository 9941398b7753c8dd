"""Calibrate the process file's uncertain physics on the plant's history.

Method (``"surrogate-nuts"``; docs/calibration.md shows why):

1. read the history and check its structure (:func:`~recovery.calibration.summaries.summarise_history`);
2. reduce it to summaries (levels and changes per inspection and characteristic
   at the nominal plan, and their slopes on the levers past engineers moved),
   and bootstrap their noise;
3. simulate the same summaries with the numba kernel under the history's own
   production days and lever plans, at a Latin hypercube of the uncertain
   parameters' log-factors, with common random numbers (every design point
   sees the same faults and noise, so differences are the physics');
4. fit a quadratic emulator of the whitened summaries, find the posterior's
   mode and narrow the box around it, repeat;
5. sample the posterior with NUTS (PyMC) on the emulator's Gaussian synthetic
   likelihood; R-hat, ESS and divergences decide ``converged``;
6. posterior predictive checks (:mod:`recovery.calibration.checks`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recovery.calibration.emulator import Box, QuadraticEmulator, latin_hypercube
from recovery.calibration.posterior import ParameterSummary, PhysicsPosterior
from recovery.calibration.summaries import (CalibrationError, History, SummaryLayout, batch_means,
                                            summarise_history)
from simulators.definition import Process
from simulators.kinds import KINDS

__all__ = ["CalibrationConfig", "CalibrationError", "calibrate"]

#: Parameters that are shares of something (kept below 1 whatever the factor).
_SHARES = {"per_pass", "efficiency", "ovality_keep", "roughness_keep", "stress_keep", "risk"}
#: The design box of the first round spans the prior's mu +- this many sigma.
_PRIOR_WIDTH = 3.0
#: A round's box is the posterior mode +- this many Laplace standard deviations.
_BOX_SDS = 4.0


@dataclass(frozen=True)
class CalibrationConfig:
    """Budgets and thresholds of :func:`calibrate`.

    Parameters
    ----------
    sim_factor : int
        Simulated batches per historical batch at each design point; the
        simulation's own noise adds ``1 / sim_factor`` of the data's noise.
    design_points : int
        Simulated parameter sets per round.
    rounds : int
        Design rounds; each narrows the box around the posterior's mode.
    extra_rounds : int
        Further rounds, each around the NUTS draws, while more than 5% of them
        lie outside the emulator's box.
    bootstrap : int
        Bootstrap replicates of the history's summaries (their noise).
    draws, tune, chains : int
        NUTS budget (PyMC).
    informed_ratio : float
        A parameter is informed when its posterior standard deviation of
        ``log(value)`` is below this share of the prior's.
    min_sensitivity : float
        Summaries whose spread over the first design is below this share of
        their noise carry nothing about the parameters and are left out.
    check_draws : int
        Posterior draws simulated for the predictive checks.
    chunk : int
        Design points per task on a Dask cluster.
    max_rhat, min_ess : float
        Convergence thresholds.
    """

    sim_factor: int = 2
    design_points: int = 250
    rounds: int = 4
    extra_rounds: int = 2
    bootstrap: int = 1000
    draws: int = 1000
    tune: int = 1000
    chains: int = 2
    informed_ratio: float = 0.5
    min_sensitivity: float = 0.3
    check_draws: int = 8
    chunk: int = 25
    max_rhat: float = 1.05
    min_ess: float = 100.0


# ---------------------------------------------------------------------------
# Simulating summaries (module-level so Dask workers can run it)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Setup:
    """Everything a design simulation needs, identical on every worker."""

    process: Process
    keys: tuple
    file_values: np.ndarray
    time: np.ndarray
    plans: np.ndarray
    layout: SummaryLayout
    seed: int


@dataclass(frozen=True)
class _Chunk:
    chunk: int
    stats: np.ndarray


def _values(setup_keys, file_values, z) -> dict:
    v = file_values * np.exp(z)
    return {k: (min(x, 0.999) if k[1] in _SHARES else float(x)) for k, x in zip(setup_keys, v)}


def _conditions(sim, setup: _Setup):
    # Faults at catalogue rates, drawn once from the seed: every design point sees the same.
    return sim.sample_conditions(len(setup.time), np.random.default_rng([setup.seed, 1]),
                                 time=setup.time, faults=True)


def _simulate(setup: _Setup, z: np.ndarray, *, seed_offset: int = 0, means: bool = False):
    from simulators.process import Simulator

    proc = setup.process.with_params(_values(setup.keys, setup.file_values, z))
    sim = Simulator(proc)
    cond = _conditions(sim, setup) if seed_offset == 0 else sim.sample_conditions(
        len(setup.time), np.random.default_rng([setup.seed, 1, seed_offset]), time=setup.time)
    n = cond.n_batches
    state, obs = sim.new_state(n), sim.new_obs(n)
    sim.run(state, 0, proc.n_steps, setup.plans, cond,
            np.random.default_rng([setup.seed, 2, seed_offset]), obs=obs)
    m = batch_means(obs, proc)
    if means:
        return m, sim.flags(obs)
    lay = setup.layout
    return lay.summaries(lay.features(m), lay.design(setup.plans))


def _design_chunk(setup: _Setup, zs: np.ndarray, size: int, *, chunk: int) -> _Chunk:
    part = zs[chunk * size:(chunk + 1) * size]
    return _Chunk(chunk, np.array([_simulate(setup, z) for z in part]))


def _simulate_design(setup: _Setup, zs: np.ndarray, client, size: int) -> np.ndarray:
    if client is None:
        return np.array([_simulate(setup, z) for z in zs])
    from recovery.distributed import ordered_map

    n = (len(zs) + size - 1) // size
    setup_f = client.scatter(setup, broadcast=True)
    return np.vstack([c.stats for c in ordered_map(client, _design_chunk, n, setup_f, zs, size)])


# ---------------------------------------------------------------------------
# Noise model
# ---------------------------------------------------------------------------

def _ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrinkage covariance of rows ``x`` towards a scaled identity.

    The bootstrap has a few hundred replicates of up to a few hundred
    summaries; the plain sample covariance would be singular or nearly so.
    """
    n, p = x.shape
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    d2 = ((s - mu * np.eye(p)) ** 2).sum()
    b2 = sum(((np.outer(r, r) - s) ** 2).sum() for r in xc) / n ** 2
    shrink = min(b2, d2) / d2 if d2 > 0 else 1.0
    return shrink * mu * np.eye(p) + (1 - shrink) * s, float(shrink)


@dataclass(frozen=True)
class _Whitener:
    """Maps summaries to independent unit-variance coordinates around the data."""

    keep: np.ndarray      # indices of the summaries used
    observed: np.ndarray  # (n_keep,)
    sd: np.ndarray        # (n_keep,)
    inv_chol: np.ndarray  # (n_keep, n_keep)
    shrinkage: float      # Ledoit-Wolf weight of the identity

    def __call__(self, s: np.ndarray) -> np.ndarray:
        u = (np.atleast_2d(s)[:, self.keep] - self.observed) / self.sd
        return u @ self.inv_chol.T


# ---------------------------------------------------------------------------
# Posterior on the emulator
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Prior:
    mu: np.ndarray     # lognormal: mean of z; uniform: log low
    sd: np.ndarray     # lognormal: sd of z; uniform: log high
    uniform: np.ndarray

    def logp_grad_hess(self, z):
        g = np.where(self.uniform, 1.0, -(z - self.mu) / self.sd ** 2)
        h = np.where(self.uniform, 0.0, 1.0 / self.sd ** 2)
        lp = np.where(self.uniform, z, -0.5 * ((z - self.mu) / self.sd) ** 2).sum()
        return lp, g, h


def _mode(em: QuadraticEmulator, noise: np.ndarray, prior: _Prior, start: np.ndarray,
          bounds: Box) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mode on the emulator and the Gauss-Newton Laplace covariance."""
    from scipy.optimize import minimize

    def f(z):
        r = em.predict(z)[0]
        j = em.jacobian(z)
        lp, g, _ = prior.logp_grad_hess(z)
        return 0.5 * (r * r / noise).sum() - lp, j.T @ (r / noise) - g

    lo = np.where(prior.uniform, prior.mu, bounds.low)
    hi = np.where(prior.uniform, prior.sd, bounds.high)
    res = minimize(f, np.clip(start, lo, hi), jac=True, method="L-BFGS-B",
                   bounds=list(zip(lo, hi)))
    z = res.x
    j = em.jacobian(z)
    _, _, h = prior.logp_grad_hess(z)
    hess = j.T @ (j / noise[:, None]) + np.diag(h)
    cov = np.linalg.pinv(hess)
    return z, cov


def _nuts(em: QuadraticEmulator, noise: np.ndarray, prior: _Prior, cfg: CalibrationConfig,
          seed: int, mode: np.ndarray, cov: np.ndarray):
    """NUTS on the emulator's synthetic likelihood.

    Sampled in the Laplace approximation's whitened coordinates ``u``
    (``z = mode + L u``): the posterior is then close to a unit normal, so
    NUTS needs no long adaptation and its jittered starts stay inside the box
    where the emulator holds (one unit of ``u`` is one posterior sd).
    """
    import logging

    import pymc as pm
    import pytensor.tensor as pt

    # PyMC announces every sampling run on its logger; calibrate reports its own diagnostics.
    logging.getLogger("pymc").setLevel(logging.ERROR)
    k = len(prior.mu)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(k))
    logdet = float(np.log(np.diag(chol)).sum())
    with pm.Model():
        u = pm.Flat("u", shape=k)
        z = pm.Deterministic("z", pt.as_tensor(mode) + pt.dot(pt.as_tensor(chol), u))
        uni = prior.uniform
        normal_lp = -0.5 * ((z - prior.mu) / prior.sd) ** 2
        # log-uniform factor: density of z = log f is e^z on [log low, log high]
        uniform_lp = pt.switch((z >= prior.mu) & (z <= prior.sd), z, -np.inf)
        pm.Potential("prior", pt.sum(pt.switch(uni, uniform_lp, normal_lp)) + logdet)
        pm.Normal("w", mu=em.tensor(z), sigma=np.sqrt(noise), observed=np.zeros(len(noise)))
        idata = pm.sample(draws=cfg.draws, tune=cfg.tune, chains=cfg.chains, cores=1,
                          random_seed=seed, progressbar=False, init="jitter+adapt_diag",
                          compute_convergence_checks=False, target_accept=0.9)
    return idata


# ---------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------

def calibrate(history: pd.DataFrame, process: Process, *, seed: int = 0,
              config: CalibrationConfig | None = None, cluster: str | None = None,
              since: float | None = None) -> PhysicsPosterior:
    """Posterior over ``process.uncertain`` from a plant's step data.

    Parameters
    ----------
    history : DataFrame
        Step data in the schema of ``simulators.schema`` (gauge readings at the
        inspections, lever set points, ``season_day`` context), e.g. what
        ``recovery simulate --explore 0.2`` writes. Exploratory lever moves are
        what inform the lever sensitivities.
    process : Process
        The process file; the history must have its structure (steps,
        characteristics, levers, inspections), not necessarily its physics.
    seed : int
        Seeds the design, the simulations and the sampler; the same seed gives
        the same posterior, on one core or on a cluster.
    config : CalibrationConfig, optional
    cluster : str, optional
        ``local:N`` or a Dask scheduler address: design simulations run there.
    since : float, optional
        Only batches of production day ``>= since`` (recalibrate on a window).

    Returns
    -------
    PhysicsPosterior
        ``method="surrogate-nuts"``; ``converged`` False (with diagnostics) when
        R-hat, ESS, divergences or the emulator's box say the draws cannot be
        trusted.

    Raises
    ------
    CalibrationError
        The history's structure differs from the process's, it has no complete
        batch, or the process has no uncertain parameter.

    Examples
    --------
    >>> from simulators.process import Simulator
    >>> from simulators.definition import load_process
    >>> plant = load_process("examples/plants/small_plant.toml")      # doctest: +SKIP
    >>> hist = Simulator(plant).simulate(1000, 1, explore=0.2).observations  # doctest: +SKIP
    >>> post = calibrate(hist, load_process("small"))                 # doctest: +SKIP
    >>> [(p.param, p.informed) for p in post.parameters]             # doctest: +SKIP
    """
    import contextlib

    from recovery.calibration.checks import predictive_checks

    cfg = config or CalibrationConfig()
    t0 = time.perf_counter()
    if not process.uncertain:
        raise CalibrationError(f"process '{process.name}' has no uncertain parameter to calibrate "
                               f"(see 'Uncertain physics' in docs/process-format.md)")
    hist = summarise_history(history, process, since=since)
    cal = _Calibration.prepare(hist, process, seed, cfg)
    keys = cal.keys
    diag: dict = {"n_batches": hist.n_batches, "dropped_incomplete": hist.dropped,
                  "since": since, "levers_moved": [process.levers[j].name for j in cal.layout.moved],
                  "rounds": []}
    client_cm = contextlib.nullcontext(None)
    if cluster:
        from recovery.distributed import cluster_client
        client_cm = cluster_client(cluster)
    with client_cm as client:
        z = cal.sample(client, diag)
    converged = (diag["rhat_max"] < cfg.max_rhat and diag["ess_bulk_min"] > cfg.min_ess
                 and diag["divergences"] <= 0.01 * len(z) and diag["outside_design_box"] < 0.05)
    diag["emulator_box_sd_factor"] = _BOX_SDS
    draws = np.array([[v for v in _values(keys, cal.file_values, zi).values()] for zi in z])
    params, reasons = _parameter_summaries(cal, z, draws)
    diag["uninformed"] = reasons
    post = PhysicsPosterior(process.name, process.digest, keys, draws, "surrogate-nuts",
                            bool(converged), diag, tuple(params), (), 0.0)
    checks = predictive_checks(post, process, hist, cal.setup, cfg, seed)
    diag["simulator_calls"] = sum(r["design_points"] + 1 for r in diag["rounds"]) + cfg.check_draws
    return PhysicsPosterior(process.name, process.digest, keys, draws, "surrogate-nuts",
                            bool(converged), _jsonable(diag), tuple(params), tuple(checks),
                            time.perf_counter() - t0)


@dataclass
class _Calibration:
    """One run of :func:`calibrate`: its fixed inputs, its random stream and the
    whitener the first design round sets (later rounds reuse it)."""

    process: Process
    cfg: CalibrationConfig
    seed: int
    rng: np.random.Generator
    keys: tuple
    file_values: np.ndarray
    prior: _Prior
    prior_sd: np.ndarray
    prior_box: Box
    layout: SummaryLayout
    observed: np.ndarray
    boot: np.ndarray
    setup: _Setup
    inflate: float
    interacts: np.ndarray
    whiten: _Whitener | None = None

    @classmethod
    def prepare(cls, hist: History, process: Process, seed: int, cfg: CalibrationConfig
                ) -> "_Calibration":
        """The prior, the history's summaries and their bootstrap noise, and the design setup."""
        rng = np.random.default_rng([seed, 0])
        keys = tuple(u.key for u in process.uncertain)
        file_values = np.array([process.step(s).params[p] for s, p in keys])
        prior = _Prior(
            mu=np.array([u.prior.a if u.prior.dist == "lognormal" else np.log(u.prior.a)
                         for u in process.uncertain]),
            sd=np.array([u.prior.b if u.prior.dist == "lognormal" else np.log(u.prior.b)
                         for u in process.uncertain]),
            uniform=np.array([u.prior.dist == "uniform" for u in process.uncertain]))
        prior_sd = np.array([u.prior.log_factor_sd() for u in process.uncertain])
        ranges = np.array([u.prior.log_factor_range(_PRIOR_WIDTH) for u in process.uncertain])
        prior_box = Box((ranges[:, 0] + ranges[:, 1]) / 2, (ranges[:, 1] - ranges[:, 0]) / 2)

        layout = SummaryLayout.build(process, hist.levers)
        feats = layout.features(hist.mean)
        design_h = layout.design(hist.levers)
        observed = layout.summaries(feats, design_h)
        boot = layout.bootstrap(feats, design_h, cfg.bootstrap, rng)
        setup = _Setup(process, keys, file_values, np.tile(hist.day, cfg.sim_factor),
                       np.tile(hist.levers, (cfg.sim_factor, 1)), layout, seed)
        inflate = 1.0 + 1.0 / cfg.sim_factor  # the simulation's own noise (common random numbers)
        return cls(process, cfg, seed, rng, keys, file_values, prior, prior_sd, prior_box, layout,
                   observed, boot, setup, inflate, _interactions(process, keys))

    def sample(self, client, diag: dict) -> np.ndarray:
        """Design rounds narrowing the box around the mode, then NUTS, with further
        rounds around the draws while they leave the emulator's box.

        Returns the draws of the log-factors ``z`` (n_draws, n_keys); records each
        round and the sampler's convergence in ``diag``.
        """
        cfg, box = self.cfg, self.prior_box
        for r in range(cfg.rounds):
            em, noise, z_mode, cov = self.fit_round(box, client, diag)
            if r + 1 < cfg.rounds:
                # Narrow around the mode; a mode at the box's edge moves the next box there.
                sd = np.sqrt(np.clip(np.diag(cov), 1e-12, None))
                box = Box(z_mode, np.clip(_BOX_SDS * sd, 0.02, box.half)).intersect(self.prior_box)
        for extra in range(cfg.extra_rounds + 1):
            idata = _nuts(em, noise, self.prior, cfg, self.seed, z_mode, cov)
            z = idata.posterior["z"].values.reshape(-1, len(self.keys))
            diag.update(_convergence(idata, em, z))
            if diag["outside_design_box"] < 0.05 or extra == cfg.extra_rounds:
                break
            # The posterior reaches past the emulator's box: a box around the draws themselves.
            box = Box(z.mean(axis=0), np.maximum(_BOX_SDS * z.std(axis=0), 0.02)).intersect(self.prior_box)
            em, noise, z_mode, cov = self.fit_round(box, client, diag)
        return z

    def fit_round(self, box: Box, client, diag: dict):
        """Simulate a design in ``box``, fit the emulator there, find the mode."""
        cfg, prior = self.cfg, self.prior
        zs = latin_hypercube(box, cfg.design_points, self.rng)
        stats = _simulate_design(self.setup, zs, client, cfg.chunk)
        if self.whiten is None:
            wh = self.whiten = _make_whitener(self.observed, self.boot, stats, self.inflate, cfg)
            diag["summaries"] = {"total": self.layout.n_summaries, "used": int(len(wh.keep)),
                                 "noise_shrinkage": wh.shrinkage}
        w = self.whiten(stats)
        em = QuadraticEmulator(box, self.interacts).fit(zs, w)
        noise = 1.0 + em.resid_var_
        # Start from the design point the simulator itself found best: the
        # emulator is least trustworthy in the first, widest box.
        lp = np.array([prior.logp_grad_hess(zi)[0] for zi in zs])
        start = zs[np.argmin(0.5 * (w ** 2).sum(axis=1) - lp)]
        mode, cov = _mode(em, noise, prior, start, box)
        # Over-dispersion: the simulator itself at the mode should miss the history by
        # about the noise. When it misses by more (physics the summaries see but the
        # uncertain parameters cannot express, noise that is not normal), widen the
        # noise by that factor instead of trusting intervals the data do not support.
        w_mode = self.whiten(_simulate(self.setup, mode))[0]
        dof = max(len(w_mode) - len(self.keys), 1)
        phi = max(1.0, float((w_mode ** 2 / noise).sum() / dof))
        noise = noise * phi
        mode, cov = _mode(em, noise, prior, mode, box)
        diag["rounds"].append({"design_points": len(zs),
                               "emulator_resid_sd_max": float(np.sqrt(em.resid_var_.max())),
                               "emulator_resid_sd_median": float(np.sqrt(np.median(em.resid_var_))),
                               "overdispersion": phi})
        return em, noise, mode, cov


def _parameter_summaries(cal: _Calibration, z: np.ndarray, draws: np.ndarray
                         ) -> tuple[list[ParameterSummary], dict[str, str]]:
    """Each uncertain parameter's posterior summary, and why the uninformed ones are."""
    process, cfg = cal.process, cal.cfg
    moved_steps = {process.levers[j].step for j in cal.layout.moved}
    lever_steps = {lv.step for lv in process.levers}
    params, reasons = [], {}
    post_sd = z.std(axis=0)
    for i, u in enumerate(process.uncertain):
        ratio = float(post_sd[i] / cal.prior_sd[i])
        informed = ratio < cfg.informed_ratio
        name = f"step {u.step} {u.param}"
        if (u.param in KINDS[process.step(u.step).kind].lever_sensitivities
                and u.step in lever_steps and u.step not in moved_steps):
            informed = False
            reasons[name] = "the step's levers never moved in the history"
        elif not informed:
            reasons[name] = f"posterior sd {ratio:.2f} of the prior's"
        lo, hi = np.quantile(draws[:, i], [0.03, 0.97])
        params.append(ParameterSummary(u.step, u.param, u.unit, float(cal.file_values[i]),
                                       float(draws[:, i].mean()), float(lo), float(hi), informed))
    return params, reasons


#: Roles nearly every kind touches a little; sharing them alone makes no interaction.
_WEAK_ROLES = {"residual_stress", "diameter"}


def _interactions(process: Process, keys) -> np.ndarray:
    """Which parameter pairs the emulator gives a product term: those whose kinds act
    on a common characteristic (polishing and plating on roughness and coating,
    temper and stress relief on strength), or where one acts on what the other
    reads (bending's springback reads the strength the temper sets)."""
    specs = [KINDS[process.step(s).kind] for s, _ in keys]
    acts = [set(sp.acts_on) - _WEAK_ROLES for sp in specs]
    needs = [set(sp.needs) - _WEAK_ROLES for sp in specs]
    k = len(keys)
    return np.array([[bool(acts[i] & acts[j] or acts[i] & needs[j] or needs[i] & acts[j])
                      for j in range(k)] for i in range(k)])


def _make_whitener(observed, boot, stats, inflate, cfg) -> _Whitener:
    sd_noise = boot.std(axis=0) * np.sqrt(inflate)
    spread = stats.std(axis=0)
    ok = np.isfinite(observed) & np.isfinite(spread) & (sd_noise > 1e-12)
    keep = np.flatnonzero(ok & (spread > cfg.min_sensitivity * np.where(ok, sd_noise, 1.0)))
    if len(keep) == 0:
        raise CalibrationError("no summary of the history responds to the uncertain parameters")
    u = (boot[:, keep] - boot[:, keep].mean(axis=0)) / boot[:, keep].std(axis=0)
    corr, shrink = _ledoit_wolf(u)
    corr = corr / np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
    chol = np.linalg.cholesky(corr)
    return _Whitener(keep, observed[keep], sd_noise[keep], np.linalg.inv(chol), shrink)


def _convergence(idata, em: QuadraticEmulator, z: np.ndarray) -> dict:
    import arviz as az

    post = idata.posterior[["z"]]
    rhat = az.rhat(post)["z"].values
    ess = az.ess(post, method="bulk")["z"].values
    div = int(idata.sample_stats["diverging"].values.sum()) if "diverging" in idata.sample_stats else 0
    return {"rhat_max": float(np.nanmax(rhat)), "ess_bulk_min": float(np.nanmin(ess)),
            "divergences": div, "outside_design_box": float((~em.box.inside(z)).mean())}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
