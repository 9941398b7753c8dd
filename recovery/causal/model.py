"""The Bayesian causal process model: :class:`CausalModel`, a PyMC estimator over the causal graph.

This module holds the estimator only; its parts live beside it (see
``docs/architecture.md``): :mod:`~recovery.causal.config`,
:mod:`~recovery.causal.summaries`, :mod:`~recovery.causal.layout`,
:mod:`~recovery.causal.likelihood`, :mod:`~recovery.causal.robust`,
:mod:`~recovery.causal.components`, :mod:`~recovery.causal.sampling`,
:mod:`~recovery.causal.posterior`, :mod:`~recovery.causal.report`,
:mod:`~recovery.causal.persistence`, and the queries in
:mod:`~recovery.causal.queries`. Their public names are re-exported here, so
``from recovery.causal.model import CausalModel, FitConfig, DataError`` works.

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
When every reading is exact (one bar per batch or all bars gauged, no gauge
sigma: a partner line of stations), the same density factorises along the graph
into one normal per reading given its parents' readings, and costs a matrix
product instead (:func:`~recovery.causal.likelihood.dag_index`,
``FitConfig.likelihood``).

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
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pandas as pd

from recovery.causal import queries
from recovery.causal.components import BarSpread, CrackModel
from recovery.causal.config import FitConfig, PriorConfig
from recovery.causal.errors import DataError, ModelLoadError
from recovery.causal.graph import CausalGraph, ExpertEdits
from recovery.causal.layout import Layout, Params, Standardisation, segment_fault_rates, standardise
from recovery.causal.likelihood import fit_data
from recovery.causal.persistence import (MODEL_FORMAT, FittedState, VersionStamp, digest, package_version,
                                         process_text)
from recovery.causal import persistence
from recovery.causal.posterior import kept_params, params_from_theta, theta_draws, to_inference_data
from recovery.causal.report import FitReport, build_report
from recovery.causal.robust import robust_adjust
from recovery.causal.sampling import sample_posterior
from recovery.causal.summaries import (Ranges, ReadingCloud, Summaries, concat_summaries, ranges,
                                       summarise)
from simulators.definition import Process, load_process

__all__ = [
    "CausalModel", "FitConfig", "PriorConfig", "Summaries", "summarise", "DataError",
    "ModelLoadError", "Params", "Layout", "Standardisation", "CrackModel", "FitReport",
    "MODEL_FORMAT", "BarSpread", "Ranges", "VersionStamp", "robust_adjust", "standardise",
]


class CausalModel:
    """Bayesian causal process model of one process (an estimator).

    ``__init__`` only stores its arguments; :meth:`fit` learns. Learned
    attributes end in ``_``: ``graph_``, ``idata_`` (the posterior, ArviZ),
    ``params_`` (decoded draws used by queries), ``report_``, ``version_``.
    :meth:`to_inference_data` gives the posterior with named mechanism
    parameters, for ArviZ's summaries and plots.

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

    def check_fitted(self) -> None:
        """Raise ``RuntimeError`` unless the model is fitted (or loaded)."""
        if not self.fitted:
            raise RuntimeError("this CausalModel is not fitted yet; call fit(data) or CausalModel.load(dir)")

    _check_fitted = check_fitted

    # ---- the one place fitted state is set -----------------------------
    def _set_fitted(self, s: FittedState, theta: np.ndarray | None = None) -> "CausalModel":
        """Set every learned attribute from ``s``, and those derived from them.

        Both :meth:`fit` (and :meth:`update`) and :meth:`load` end here, so a
        loaded model is the fitted one attribute for attribute. ``theta``: the
        posterior draws read without ArviZ (``load(..., posterior="draws")``),
        where ``s.idata`` is None.
        """
        self.graph_, self.layout_, self.std_ = s.graph, s.layout, s.std
        self.config_, self.priors_ = s.config, s.priors
        self.idata_ = s.idata
        self.crack_, self.spread_ = s.crack, s.spread
        self.summaries_ = s.summaries
        self.report_, self.version_ = s.report, s.version
        self._process_text = s.process_text
        self.ranges_ = ranges(s.summaries)
        self.cloud_ = ReadingCloud(s.summaries)
        if theta is None:
            self.params_ = kept_params(s.idata, s.layout, s.graph, s.spread, s.std,
                                       keep=s.config.keep_draws, seed=s.config.seed)
        else:
            self.params_ = params_from_theta(theta, s.layout, s.graph, s.spread, s.std,
                                             keep=s.config.keep_draws, seed=s.config.seed)
        self._do: dict[int, float] = {}
        return self

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
        self.check_fitted()
        process = self.graph_.process
        summ = new_data if isinstance(new_data, Summaries) else summarise(new_data, process)
        if summ.n_batches < 1:
            raise DataError("no new batches")
        theta = self.theta_draws()
        mu = theta.mean(axis=0)
        cov = np.cov(theta, rowvar=False)
        # Shrink toward the diagonal a little: the draws estimate a covariance of
        # a few hundred parameters from about a thousand draws.
        cov = 0.9 * cov + 0.1 * np.diag(np.diag(cov)) + 1e-9 * np.eye(len(mu))
        new = CausalModel(process, edits=self.edits, config=config or self.config_, priors=self.priors_)
        return new._fit(process, self.graph_, summ, self.std_, config or self.config_, self.priors_,
                        prior=(mu, cov), progress=progress, previous=self)

    def _fit(self, process: Process, graph: CausalGraph, summ: Summaries, std: Standardisation,
             cfg: FitConfig, priors: PriorConfig, *, prior, progress: bool,
             previous: "CausalModel | None" = None) -> "CausalModel":
        layout = Layout(graph, std, priors, segment_fault_rates(process, graph))
        all_summ = summ if previous is None else concat_summaries(previous.summaries_, summ)
        spread = BarSpread.fit(all_summ, process, priors.spread_trim)
        fd = fit_data(summ, graph, std, layout, spread)
        if not fd.patterns:
            raise DataError("no batch has gauge readings the model can use")
        data_notes = _unmoved_lever_notes(process, layout, summ, std, priors) if prior is None else []
        s = sample_posterior(layout, fd, prior, process.bars_per_batch, cfg, progress,
                             process_digest=process.digest)
        s.notes.extend(data_notes)
        report = build_report(s.idata, layout, graph, spread, all_summ, cfg, s.sampler, summ.n_batches,
                              fd.excluded, s.compile_seconds, s.sample_seconds, s.notes)
        if previous is not None:
            report = replace(report, notes=report.notes + (
                f"updated from model {previous.version_.id} with {summ.n_batches} new batches; "
                "previous posterior used as prior (multivariate normal, moment-matched)",))
        version = VersionStamp(package_version(), MODEL_FORMAT, process.name, process.digest,
                               all_summ.digest(), digest(theta_draws(s.idata)), cfg.method,
                               pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
        # Spread and crack are conjugate: refit on every batch seen, exactly.
        return self._set_fitted(FittedState(graph, layout, std, cfg, priors, s.idata,
                                            CrackModel.fit(all_summ, process), spread, all_summ, report,
                                            version, process_text(process)))

    # ---- the posterior -------------------------------------------------
    def theta_draws(self, robust: bool = True) -> np.ndarray:
        """Posterior draws ``(S, P)`` of the flat parameter vector: the robust
        ones when the fit made them (``robust=False``: the sampler's own)."""
        return theta_draws(self.idata_, robust)

    _theta_draws = theta_draws

    def to_inference_data(self, *, robust: bool = True):
        """The posterior as ArviZ ``InferenceData`` with named mechanism parameters.

        See :func:`recovery.causal.posterior.to_inference_data`.

        Examples
        --------
        >>> # import arviz as az
        >>> # idata = model.to_inference_data()
        >>> # az.summary(idata, var_names=["noise_sd"]); az.plot_forest(idata, var_names=["carry"])
        """
        self.check_fitted()
        return to_inference_data(self.idata_, self.layout_, robust=robust)

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
        self.check_fitted()
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
    def held_levers(self) -> Mapping[int, float]:
        """Levers held fixed by :meth:`do` (lever index -> value, physical units; read-only)."""
        return MappingProxyType(getattr(self, "_do", {}))

    @property
    def intervention(self) -> dict[str, float]:
        """Levers held fixed by :meth:`do` (name -> value)."""
        p = self.graph_.process
        return {p.levers[i].name: v for i, v in self.held_levers.items()}

    # ---- queries (see recovery.causal.queries) -------------------------
    def state(self, history: pd.DataFrame, **kw):
        """Posterior of the batch's hidden characteristics; see :func:`queries.state`."""
        return queries.state(self, history, **kw)

    def state_draws(self, history: pd.DataFrame, n: int, **kw):
        """Joint draws of the batch's hidden state; see :func:`queries.state_draws`."""
        return queries.state_draws(self, history, n, **kw)

    def predict(self, history: pd.DataFrame, plan=None, **kw):
        """Posterior predictive of the final characteristics and of acceptance; see :func:`queries.predict`."""
        return queries.predict(self, history, plan, **kw)

    def predict_many(self, history: pd.DataFrame, plans: np.ndarray, **kw):
        """P(accept) of many plans for one batch; see :func:`queries.predict_many`."""
        return queries.predict_many(self, history, plans, **kw)

    def root_cause(self, history: pd.DataFrame, **kw):
        """Posterior over the origin of the batch's deviation; see :func:`queries.root_cause`."""
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
        self.check_fitted()
        return persistence.save(self, directory)

    @classmethod
    def load(cls, directory: str | Path, *, posterior: str = "full") -> "CausalModel":
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        directory : str or Path
        posterior : {"full", "draws"}
            ``"draws"``: read only the posterior draws the queries use (``theta``,
            with h5py) and leave ArviZ's ``InferenceData`` (``idata_``) to be read
            from the folder when first asked for. ArviZ's import is most of a full
            load's time (about 1 s of CPU); a short-lived command that only plans
            (``recovery measure``) does not need it. The folder must not be
            rewritten before ``idata_`` is read. ``params_`` is the same either way.

        Raises
        ------
        ModelLoadError
            The directory or a file is missing, or it was written by an
            incompatible model format.
        """
        if posterior not in ("full", "draws"):
            raise ValueError(f"posterior must be 'full' or 'draws', got {posterior!r}")
        if posterior == "full":
            s = persistence.load(directory)
            m = cls(s.graph.process, edits=s.graph.edits, config=s.config, priors=s.priors)
            return m._set_fitted(s)
        s = persistence.load(directory, posterior=False)
        theta = persistence.read_theta(directory, s.layout.names)
        m = cls(s.graph.process, edits=s.graph.edits, config=s.config, priors=s.priors)
        m._idata_dir = Path(directory)
        return m._set_fitted(s, theta)

    @property
    def idata_(self):
        """The posterior (ArviZ ``InferenceData``); read from the model folder on first use
        after ``load(..., posterior="draws")``."""
        if self.__dict__.get("_idata") is None and self.__dict__.get("_idata_dir") is not None:
            self._idata = persistence.read_idata(self._idata_dir)
        if "_idata" not in self.__dict__:
            raise AttributeError("'CausalModel' object has no attribute 'idata_' (not fitted)")
        return self._idata

    @idata_.setter
    def idata_(self, value) -> None:
        self._idata = value


def _unmoved_lever_notes(process: Process, layout: Layout, summ: Summaries, std: Standardisation,
                         priors: PriorConfig) -> list[str]:
    """A note naming the levers the history never moved from nominal.

    Their features are 0 in every batch, so the data say nothing about their
    effects, which keep their prior. Say so rather than let a plan that moves
    them look learnt (queries flag such plans as out of range).
    """
    acts = np.unique(layout.lever_f % layout.L)
    still = acts[np.all(np.isclose(summ.levers[:, acts], std.lever_nominal[acts]), axis=0)]
    if not len(still):
        return []
    one = len(still) == 1
    return [f"{', '.join(process.levers[j].name for j in still)}: never moved from nominal in "
            f"these {summ.n_batches} batches, so the model knows nothing of "
            f"{'its' if one else 'their'} effects (prior sd {priors.lever_sd:g} "
            f"in standardised units); plans that move {'it' if one else 'them'} are out of "
            "the data's range"]
