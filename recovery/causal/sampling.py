"""Sampling the posterior: the PyMC model over ``theta`` (:func:`build_pymc_model`),
the sampler (NUTS by nutpie or PyMC, or ADVI) and the robust widening of its
draws, in :func:`sample_posterior`.

PyMC and nutpie are imported here only, inside the functions: loading a model
and answering queries never needs them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from threadpoolctl import threadpool_limits

from recovery.causal.config import FitConfig
from recovery.causal.errors import DataError
from recovery.causal.layout import Layout
from recovery.causal.likelihood import FitData, data_values, likelihood_form, loglik_tensor
from recovery.causal.robust import robust_adjust

__all__ = ["Sampled", "build_pymc_model", "checked_start", "model_data", "regression_start",
           "sample_posterior"]


@dataclass
class Sampled:
    """What the sampler gives back.

    Attributes
    ----------
    idata : arviz.InferenceData
        ``theta`` (and ``theta_robust`` when widened) over (chain, draw, param).
    sampler : str
        ``advi``, ``nutpie`` or ``pymc``.
    compile_seconds, sample_seconds : float
    notes : list of str
        For the fit report.
    """

    idata: object
    sampler: str
    compile_seconds: float
    sample_seconds: float
    notes: list = field(default_factory=list)


def model_data(layout: Layout, fd: FitData, prior) -> dict[str, np.ndarray]:
    """The data of the PyMC model built with ``shared=True``, by input name: the
    likelihood's (:func:`~recovery.causal.likelihood.data_values`) and the
    prior's moments (``prior_mu``, ``prior_sd``, or an update's ``prior_mean``,
    ``prior_chol``)."""
    out = data_values(fd)
    if prior is None:
        out["prior_mu"] = np.asarray(layout.prior_mu, dtype=np.float64)
        out["prior_sd"] = np.asarray(layout.prior_sd, dtype=np.float64)
    else:
        out["prior_mean"] = np.asarray(prior[0], dtype=np.float64)
        out["prior_chol"] = np.linalg.cholesky(prior[1])
    return out


def build_pymc_model(layout: Layout, fd: FitData, prior, bars: int, *, shared: bool = False,
                     form: str = "auto"):
    """The PyMC model: ``theta`` with the layout's priors (or an update's
    multivariate normal ``prior = (mean, cov)``) and the likelihood as a potential.

    With ``shared`` the data (:func:`model_data`) enter as PyTensor shared
    variables of unknown length, so the graph is the same for every data set of
    one structure and its compiled form can be reused
    (:mod:`recovery.causal.compiled`); without, as constants. ``form``: the
    likelihood's form (:func:`~recovery.causal.likelihood.loglik_tensor`)."""
    import pymc as pm

    data = None
    if shared:
        import pytensor

        data = {k: pytensor.shared(v, name=k, shape=(None,) * v.ndim)
                for k, v in model_data(layout, fd, prior).items()}
    with pm.Model(coords={"param": layout.names}) as model:
        if prior is None:
            mu, sd = (layout.prior_mu, layout.prior_sd) if data is None else (data["prior_mu"], data["prior_sd"])
            theta = pm.Normal("theta", mu=mu, sigma=sd, dims="param")
        else:
            mean, chol = ((prior[0], np.linalg.cholesky(prior[1])) if data is None
                          else (data["prior_mean"], data["prior_chol"]))
            theta = pm.MvNormal("theta", mu=mean, chol=chol, dims="param")
        P = layout.decode_tensor(theta)
        pm.Potential("loglik", loglik_tensor(P, fd, layout, bars, data=data, form=form))
        if prior is None and layout.drift_scale_i is not None:
            # Partial pooling of the factory drift slopes: kappa ~ N(0, sd_drift). The
            # wide base prior of theta stays underneath; an update's prior already holds this.
            import pytensor.tensor as pt
            kappa = theta[layout.drift_i]
            log_sd = theta[layout.drift_scale_i]
            pm.Potential("drift_pooling", pt.sum(-log_sd - 0.5 * (kappa / pt.exp(log_sd)) ** 2))
    return model


def regression_start(layout: Layout, fd: FitData, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """A start for the optimiser: the prior means, with each gauged pair's mean
    and its segment's lever effects from a regression of its readings.

    Why: ADVI's Adam moves each parameter by about its learning rate per step,
    so from the prior mean (no lever effect) it cannot reach an effect of
    tens of standardised units in a short run. Such effects are ordinary: a
    characteristic's unit is its batch-to-batch spread at nominal levers,
    and a lever exists to move it by far more (on the small process one extra
    polishing pass takes 19 spreads off the roughness). Started at the prior mean, the
    fault-shift mixture explains the explored batches as faults instead (their
    readings lie tens of spreads off), which doubled the final inspection's
    fault rate of ``benchmarks/health_seasons.py`` (BENCHMARKS.md, issue 20).

    For each gauged pair ``(q, c)`` the readings are regressed on an intercept,
    the features of the levers that act on ``c`` in segment ``q`` (``B[q, c]``)
    and the day; levers are set independently of the state a batch arrives
    with, so the slopes estimate the direct effects without the carry-over.
    The regression is the posterior mean under the parameters' own normal
    priors and unit noise (a ridge): a pair with few readings stays near its
    prior. Only the start moves; the prior and the likelihood do not.

    Parameters
    ----------
    layout : Layout
    fd : FitData
    mean, sd : ndarray (P,)
        Prior means and sds of ``theta`` (standardised units).

    Returns
    -------
    ndarray (P,)
        The start (standardised units).
    """
    theta = np.array(mean, dtype=np.float64)
    F = layout.F
    m_of = {(int(q), int(c)): int(i) for q, c, i in zip(layout.mean_q, layout.mean_c, layout.mean_i)}
    for j, (q, c) in enumerate(fd.rows.tolist()):
        ys, xs = [], []
        for idx, Zp, zeta in fd.patterns:
            k = np.flatnonzero(idx == j)
            if len(k):
                ys.append(Zp[:, k[0]])
                xs.append(zeta)
        if not ys or (q, c) not in m_of:
            continue
        y, zeta = np.concatenate(ys), np.concatenate(xs)
        sel = np.flatnonzero((layout.lever_q == q) & (layout.lever_c == c))
        cols = [m_of[q, c]] + layout.lever_i[sel].tolist()
        X = np.column_stack([np.ones(len(y)), zeta[:, layout.lever_f[sel]], zeta[:, F]])
        ok = np.isfinite(y)
        if ok.sum() < X.shape[1] + 2:
            continue
        # the day's slope is the drift's, shared across pairs: a nuisance here (prior sd 3)
        prec = np.concatenate([1.0 / np.asarray(sd)[cols] ** 2, [1.0 / 9.0]])
        centre = np.concatenate([np.asarray(mean)[cols], [0.0]])
        Xo, yo = X[ok], y[ok]
        beta = np.linalg.solve(Xo.T @ Xo + np.diag(prec), Xo.T @ yo + prec * centre)
        theta[cols] = beta[:-1]
    return theta


def _run_advi(model, cfg: FitConfig, progress: bool, t0: float, start: np.ndarray | None = None) -> Sampled:
    import pymc as pm

    with model:
        # Adam with a decaying step: the default (adagrad, 1e-3) is still far
        # from the optimum after tens of thousands of steps on this model.
        approx = pm.fit(n=cfg.advi_steps, method="advi", random_seed=cfg.seed,
                        progressbar=progress, start=None if start is None else {"theta": start},
                        obj_optimizer=pm.adam(learning_rate=cfg.advi_learning_rate),
                        callbacks=[pm.callbacks.CheckParametersConvergence(tolerance=1e-3)])
        idata = approx.sample(cfg.draws, random_seed=cfg.seed)
    ran = len(approx.hist)   # CheckParametersConvergence may stop it early
    notes = [f"ADVI, {ran} steps" + (f" (of {cfg.advi_steps}: the parameters settled)" if ran < cfg.advi_steps else "")
             + f", final loss {float(approx.hist[-1]):.1f}; "
             "mean-field: posterior spread is underestimated"]
    return Sampled(idata, "advi", 0.0, time.perf_counter() - t0, notes)


def checked_start(logp_dlogp, start: np.ndarray, sd: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
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


def _run_nuts(build_model, cfg: FitConfig, progress: bool, t0: float, layout: Layout, fd: FitData,
              prior, bars: int, process_digest: str, use_cache: bool) -> Sampled:
    import pymc as pm

    sampler = cfg.sampler
    if sampler == "auto":
        try:
            import nutpie  # noqa: F401
            sampler = "nutpie"
        except ImportError:
            sampler = "pymc"
    notes = []
    if sampler == "nutpie":
        import nutpie

        from recovery.causal.compiled import compile_nutpie, read_warm, structure_key

        # Every chain starts at the prior means (catalogue fault rates, carry-over 1,
        # no lever effect) rather than jittered by U(-1, 1) in standardised units:
        # a jittered start can put a chain in a fault-mixture mode that explains a
        # fault type as batch noise, where it stays (seen once in four fits of
        # 1,000 batches: R-hat 1.84). R-hat still compares the chains.
        mean0 = layout.prior_mu if prior is None else np.asarray(prior[0], dtype=np.float64)
        sd0 = layout.prior_sd if prior is None else np.sqrt(np.diag(prior[1]))
        form = cfg.likelihood
        key = structure_key(layout, fd, prior, bars, process_digest, form=likelihood_form(fd, layout, form))
        # A warm start (an earlier healthy fit of this structure left its posterior
        # mean, sd and step size): sample x = (theta - mean) / sd from that mean. The
        # posterior of theta is the same; what tuning has to find (the scales, the
        # step, the way from the prior means to the typical set, the slowest part
        # of a cold tuning) is mostly known, so fewer tuning steps are run.
        warm = read_warm(key, layout.size) if use_cache and cfg.warm_tune is not None else None
        shift, scale = (0.0, 1.0) if warm is None else (warm.mean, warm.sd)
        # The data are shared inputs, so the compiled graph of this structure is
        # reused from the cache by every later fit of the same process.
        c = compile_nutpie(lambda: build_pymc_model(layout, fd, prior, bars, shared=True, form=form), key,
                           model_data(layout, fd, prior), mean0, use_cache=use_cache, shift=shift, scale=scale)
        start, _ = checked_start(c.logp_dlogp, mean0 if warm is None else warm.mean, sd0, layout.names)
        x0 = (start - shift) / scale
        compiled = replace(c.model, initial_point_func=lambda seed: x0.copy())
        notes.append("compiled log-density " + ("from the cache" if c.cache_hit else "compiled afresh")
                     + f" ({c.seconds:.1f} s)")
        if c.note:
            notes.append(c.note)
        tune, extra = cfg.tune, {}
        if warm is not None:
            tune, extra = cfg.warm_tune, {"initial_step": warm.step_size}
            notes.append(f"warm start from the last healthy fit of this process structure: {tune} tuning "
                         f"steps (not {cfg.tune}), scaled by its posterior sd, from its posterior mean")
        t1 = time.perf_counter()
        idata = nutpie.sample(compiled, draws=cfg.draws, tune=tune, chains=cfg.chains,
                              cores=min(cfg.chains, 2), seed=cfg.seed, progress_bar=progress, **extra)
        if use_cache:
            _leave_warm(idata, key, notes)
    else:
        model = build_model()
        t1 = time.perf_counter()
        with model:
            idata = pm.sample(draws=cfg.draws, tune=cfg.tune, chains=cfg.chains, init="adapt_diag",
                              cores=1, random_seed=cfg.seed, progressbar=progress,
                              compute_convergence_checks=False)
    return Sampled(idata, sampler, t1 - t0, time.perf_counter() - t1, notes)


def _leave_warm(idata, key: str, notes: list) -> None:
    """Leave this fit's posterior mean and sd and its step size for the next fit of
    the structure (:func:`recovery.causal.compiled.write_warm`), if it is healthy:
    two chains or more, R-hat < 1.05, no divergence. A fit stuck in a poor mode
    must not become the next fit's start."""
    import arviz as az

    from recovery.causal.compiled import WarmState, write_warm

    post = idata.posterior["theta"]
    if post.sizes["chain"] < 2:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rh = float(np.nanmax(az.rhat(idata.posterior, var_names=["theta"])["theta"].values))
    ss = idata.sample_stats
    div = int(np.asarray(ss["diverging"]).sum()) if "diverging" in ss else 0
    if not rh < 1.05 or div:
        return
    flat = np.asarray(post.transpose("chain", "draw", ...).values).reshape(-1, post.sizes["param"])
    sd = flat.std(axis=0)
    # The step size after tuning is in nutpie's coordinates, those of its adapted
    # mass matrix (about the posterior sd): about unit scale whatever x was, as are
    # the next fit's coordinates (theta - mean) / sd. It carries over as it is.
    step = float(np.median(np.asarray(ss["step_size"].isel(draw=-1).values, dtype=float)))
    try:
        write_warm(key, WarmState(flat.mean(axis=0), np.maximum(sd, 1e-12), step))
    except OSError as exc:  # a cache that cannot be written costs time only
        notes.append(f"warm state not cached ({type(exc).__name__}: {exc})")


def _widen(s: Sampled, cfg: FitConfig, fd: FitData, layout: Layout, prior) -> None:
    """Add ``theta_robust`` (:func:`robust_adjust`) unless the chains disagree."""
    raw = s.idata.posterior["theta"]
    if cfg.robust != "sandwich":
        return
    if cfg.method == "nuts" and raw.sizes["chain"] > 1:
        import arviz as az

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rh = float(np.nanmax(az.rhat(s.idata.posterior, var_names=["theta"])["theta"].values))
        if rh >= 1.1:
            s.notes.append(f"posterior not widened for misspecification: the chains disagree "
                           f"(R-hat {rh:.2f}), so a sandwich about their joint mean means nothing")
            return
    C, S = raw.sizes["chain"], raw.sizes["draw"]
    flat = np.asarray(raw.transpose("chain", "draw", ...).values).reshape(C * S, -1)
    adj, ratio = robust_adjust(flat, fd, layout, prior, form=cfg.likelihood)
    s.idata.posterior["theta_robust"] = (("chain", "draw", "param"), adj.reshape(C, S, -1))
    k = int(np.argmax(ratio))
    s.notes.append(f"posterior widened for model misspecification (sandwich, from each batch's "
                   f"score): sd x{np.median(ratio):.2f} median, x{ratio.max():.1f} at most "
                   f"({layout.names[k]}); FitConfig(robust='none') keeps the sampler's draws")


def sample_posterior(layout: Layout, fd: FitData, prior, bars: int, cfg: FitConfig,
                     progress: bool, *, process_digest: str = "", use_cache: bool = True) -> Sampled:
    """Build the PyMC model, sample it as ``cfg`` says, and widen the draws.

    Parameters
    ----------
    layout : Layout
    fd : FitData
        The training summaries in the model's units.
    prior : (mean, cov) or None
        An update's prior; ``None``: the layout's priors.
    bars : int
        Bars per batch.
    cfg : FitConfig
    progress : bool
        Show the sampler's progress bar.
    process_digest : str
        ``Process.digest``: part of the key of the compiled log-density.
    use_cache : bool
        Reuse (and store) nutpie's compiled log-density of this structure
        (:mod:`recovery.causal.compiled`); ``False`` compiles afresh.

    Returns
    -------
    Sampled
    """
    # The likelihood is compiled by nutpie (numba) or PyTensor's C backend;
    # its missing-BLAS warning concerns neither, so keep it off the console.
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
    import pymc  # noqa: F401  (imported before the clock starts: its import is not compile time)

    t0 = time.perf_counter()
    # One BLAS thread: the chains run on their own threads, and each leapfrog
    # step factors small (35 x 35 on the default process) matrices; OpenBLAS's
    # own threads on top oversubscribed the two cores (14.4 ms per step and
    # chain against 5.4 ms with one BLAS thread, default process, two chains).
    # The CLI sets the same limit by environment before numpy loads; this one
    # covers fits from Python (notebooks, benchmarks, the service).
    form = cfg.likelihood
    with threadpool_limits(limits=1, user_api="blas"):
        if cfg.method == "advi":
            # a fresh fit starts at the regression start; an update at its prior (the last posterior)
            start = None if prior is not None else regression_start(layout, fd, layout.prior_mu, layout.prior_sd)
            s = _run_advi(build_pymc_model(layout, fd, prior, bars, form=form), cfg, progress, t0, start)
        else:
            s = _run_nuts(lambda: build_pymc_model(layout, fd, prior, bars, form=form), cfg, progress, t0,
                          layout, fd, prior, bars, process_digest, use_cache)
        if likelihood_form(fd, layout, form) == "dag":
            s.notes.append("likelihood factorised along the causal graph (every reading exact: one "
                           "normal per reading given its parents; the same density as the dense form)")
        _widen(s, cfg, fd, layout, prior)
    return s
