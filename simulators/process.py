"""Public rollouts of a process: the plain-Python wall around the numba kernel.

A *state* is an array ``(n_batches * bars_per_batch, n_chars)`` of every bar's
true characteristics after some step ``k`` (``k = 0``: before the first step).
``Simulator.run`` advances it through steps ``k+1 .. stop``. Everything random
takes a ``np.random.Generator`` or a seed; the same seed gives the same numbers.

Examples
--------
>>> from simulators.process import Simulator
>>> sim = Simulator()                      # the built-in 50-step process
>>> res = sim.simulate(20, seed=1)
>>> res.accepted.shape
(20,)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulators import _kernels
from simulators.definition import Process, load_process
from simulators.reference import advance_reference

__all__ = ["Simulator", "Conditions", "SimulationResult", "KernelStep", "as_rng"]

_NO_NOISE = np.empty(0)
_F64, _I64 = np.dtype(np.float64), np.dtype(np.int64)
EPOCH = pd.Timestamp("2026-01-05T06:00:00Z")
STEP_DURATION = pd.Timedelta(hours=2)


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A Generator from a seed, or the Generator itself."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


@dataclass(frozen=True)
class Conditions:
    """What is fixed for each batch before it runs.

    Attributes
    ----------
    batch_ids : ndarray of str, (n_batches,)
    time : ndarray, (n_batches,)
        Production day of the season, in days; drives factory drift.
    fault : ndarray, (n_batches, n_steps)
        Magnitude of the fault injected at each step (0 where none), in the unit
        of the step's fault channel.
    occurred : ndarray of bool, (n_batches, n_steps)
    drift : ndarray, (n_batches, n_steps)
        Partner offset plus factory drift, in batch-sigma units.
    """

    batch_ids: np.ndarray
    time: np.ndarray
    fault: np.ndarray
    occurred: np.ndarray
    drift: np.ndarray

    @property
    def n_batches(self) -> int:
        return len(self.batch_ids)

    def take(self, idx) -> "Conditions":
        """The conditions of a subset of batches (or repeated batches)."""
        idx = np.asarray(idx)
        return Conditions(self.batch_ids[idx], self.time[idx], self.fault[idx],
                          self.occurred[idx], self.drift[idx])


@dataclass(frozen=True)
class SimulationResult:
    """What ``Simulator.simulate`` returns.

    ``observations`` is the step data an engineer would see (the schema in
    ``simulators.schema``). The rest is ground truth, for evaluation only.
    """

    process: Process
    conditions: Conditions
    plan: np.ndarray            # (n_batches, n_levers) lever values actually used
    obs: np.ndarray             # (n_batches, n_insp, max_sample, n_chars), NaN = not measured
    state: np.ndarray           # final state of every bar
    latent: np.ndarray | None   # (n_batches, n_steps + 1, n_chars) batch means, if recorded
    in_spec: np.ndarray         # (n_batches,) share of bars inside every final band
    accepted: np.ndarray        # (n_batches,) bool
    flags: np.ndarray           # (n_batches, n_insp) bool: flagged at that inspection

    @property
    def observations(self) -> pd.DataFrame:
        from simulators.schema import observations_frame
        return observations_frame(self.process, self.conditions, self.obs, self.plan)

    def faults_frame(self) -> pd.DataFrame:
        """Ground truth: one row per injected fault (batch_id, step, fault, magnitude)."""
        p = self.process
        rows = []
        for f in p.faults:
            s = f.step - 1
            for b in np.flatnonzero(self.conditions.occurred[:, s]):
                rows.append((self.conditions.batch_ids[b], f.step, f.name,
                             float(self.conditions.fault[b, s])))
        return pd.DataFrame(rows, columns=["batch_id", "step", "fault", "magnitude"])

    def first_flag(self) -> np.ndarray:
        """Step of the first inspection that flags each batch (0 = never)."""
        steps = np.array(self.process.inspection_steps)
        any_flag = self.flags.any(axis=1)
        first = np.argmax(self.flags, axis=1)
        return np.where(any_flag, steps[first], 0)


def _check_array(name: str, arr, shape: tuple, dtype) -> None:
    """Refuse an array the kernel cannot take: wrong shape or dtype, or not C-contiguous.

    ``None`` in ``shape`` accepts any length along that axis.

    The kernel runs without bounds checks, so a wrong shape would read or write
    past the array instead of failing.
    """
    if type(arr) is np.ndarray and arr.shape == shape and arr.dtype == dtype and arr.flags.c_contiguous:
        return  # the usual case, first: the envs check their arrays at every reset
    ok = isinstance(arr, np.ndarray) and arr.ndim == len(shape) and arr.dtype == dtype \
        and arr.flags.c_contiguous and all(n is None or n == m for n, m in zip(shape, arr.shape))
    if not ok:
        got = (f"{arr.dtype} of shape {arr.shape}, C-contiguous={arr.flags.c_contiguous}"
               if isinstance(arr, np.ndarray) else type(arr).__name__)
        want = str(shape).replace("None", "any")
        raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype)} of shape {want}, got {got}")


class Simulator:
    """Fast simulator of one process.

    Parameters
    ----------
    process : Process or str or Path, optional
        A loaded process, or anything ``load_process`` accepts. Default: the
        built-in 50-step process.
    reference : bool, default False
        Use the slow NumPy twin instead of the numba kernel (tests and benchmarks).
    """

    def __init__(self, process: Process | str | None = None, *, reference: bool = False):
        self.process = process if isinstance(process, Process) else load_process(process)
        self.arrays = self.process.arrays
        self.reference = reference
        p = self.process
        self.lower, self.upper = p.final_bands()
        self._max_sample = int(self.arrays.insp_sample.max()) if len(p.inspections) else 1

    # ---- conditions ------------------------------------------------------
    def sample_conditions(self, n_batches: int, rng: np.random.Generator | int | None = None, *,
                          time: np.ndarray | None = None, faults: bool = True,
                          force_fault: str | None = None, prefix: str = "B",
                          first_id: int = 1, after_step: int = 0) -> Conditions:
        """Draw batch conditions: production day and injected faults.

        Parameters
        ----------
        n_batches : int
        rng : Generator or int
        time : array, optional
            Production day per batch; default: spread evenly over the season.
        faults : bool
            Inject faults at their catalogue rates.
        force_fault : str, optional
            Give every batch this fault and no other (magnitude still random).
        prefix, first_id : str, int
            Batch ids are ``f"{prefix}-{first_id + i}"``.
        after_step : int
            Only faults at steps after this one (for rollouts from mid-process).

        Returns
        -------
        Conditions
        """
        rng = as_rng(rng)
        p, a = self.process, self.arrays
        if time is None:
            time = np.linspace(0.0, p.season_days, n_batches, endpoint=False)
        time = np.asarray(time, dtype=np.float64)
        fault = np.zeros((n_batches, p.n_steps))
        occurred = np.zeros((n_batches, p.n_steps), dtype=bool)
        if force_fault is not None and force_fault not in {f.name for f in p.faults}:
            raise ValueError(f"unknown fault '{force_fault}'; known: {[f.name for f in p.faults]}")
        for f in p.faults:
            # Always draw all three arrays, so the stream does not depend on outcomes.
            hit = rng.random(n_batches) < f.rate
            mag = rng.uniform(f.low, f.high, n_batches)
            sign = np.where(rng.random(n_batches) < 0.5, -1.0, 1.0) if f.symmetric else 1.0
            if not faults:
                hit = np.zeros(n_batches, dtype=bool)
            if force_fault is not None:  # exactly this fault, whatever ``faults`` says
                hit = np.full(n_batches, f.name == force_fault)
            if f.step <= after_step:
                hit = np.zeros(n_batches, dtype=bool)
            occurred[:, f.step - 1] = hit
            fault[:, f.step - 1] = np.where(hit, mag * sign, 0.0)
        drift = a.partner_offset[None, :] + a.factory_drift[None, :] * time[:, None] / 100.0
        ids = np.array([f"{prefix}-{first_id + i}" for i in range(n_batches)], dtype=object)
        return Conditions(ids, time, fault, occurred, np.ascontiguousarray(drift))

    # ---- core ------------------------------------------------------------
    def new_state(self, n_batches: int) -> np.ndarray:
        """The state of fresh bars, shape ``(n_batches * bars_per_batch, n_chars)``.

        Zero, except that characteristics of role ``other`` start at their
        nominal: no step kind acts on them (a forming step resets them to 0),
        so they are carried at nominal instead of reading as 0 and failing
        every band.
        """
        st = np.zeros((n_batches * self.process.bars_per_batch, self.process.n_chars))
        for i, c in enumerate(self.process.characteristics):
            if c.role == "other":
                st[:, i] = c.nominal
        return st

    def new_obs(self, n_batches: int) -> np.ndarray:
        return np.full((n_batches, len(self.process.inspections), self._max_sample,
                        self.process.n_chars), np.nan)

    def physics(self, keys, draws: np.ndarray) -> np.ndarray:
        """Step-parameter sets of this process with some parameters replaced, for ``run``.

        The array form of :meth:`Process.with_params` for many sets at once: set
        ``i`` equals ``process.with_params(dict(zip(keys, draws[i]))).arrays.params``.

        Parameters
        ----------
        keys : sequence of (int, str)
            ``(step, param)`` of each replaced parameter (1-based step; a
            parameter of the step's kind that no lever sets).
        draws : ndarray (n_sets, len(keys))
            Values, each in its parameter's own unit.

        Returns
        -------
        ndarray (n_sets, n_steps, MAX_PARAMS)
        """
        from simulators.kinds import KINDS

        p = self.process
        draws = np.atleast_2d(np.asarray(draws, dtype=np.float64))
        if draws.shape[1] != len(keys):
            raise ValueError(f"draws must have {len(keys)} columns (one per key), got {draws.shape}")
        out = np.repeat(self.arrays.params[None], len(draws), axis=0)
        levers = {(lv.step, lv.sets) for lv in p.levers}
        for c, (step, name) in enumerate(keys):
            if not 1 <= int(step) <= p.n_steps:
                raise ValueError(f"{p.source}: no step {step}")
            spec = KINDS[p.step(int(step)).kind]
            if name not in spec.params or (int(step), name) in levers:
                raise ValueError(f"{p.source}: step {step} has no physics parameter '{name}'")
            out[:, int(step) - 1, spec.index(name)] = draws[:, c]
        return out

    def run(self, state: np.ndarray, after_step: int, stop_step: int, plan: np.ndarray,
            conditions: Conditions, rng: np.random.Generator | int | None, *,
            obs: np.ndarray | None = None, latent: np.ndarray | None = None,
            params: np.ndarray | None = None, param_set: np.ndarray | None = None) -> np.ndarray:
        """Advance ``state`` (in place) from after ``after_step`` through ``stop_step``.

        Parameters
        ----------
        state : ndarray (n_batches * bars_per_batch, n_chars)
        after_step, stop_step : int
            ``0 <= after_step <= stop_step <= n_steps``.
        plan : ndarray (n_batches, n_levers) or (n_levers,)
            Lever values in physical units (clipped by nobody: check bounds first).
        conditions : Conditions
        rng : Generator or int
        obs, latent : ndarray, optional
            Filled in place if given (see ``SimulationResult``).
        params : ndarray (n_sets, n_steps, MAX_PARAMS), optional
            Physics (step-parameter sets, see :meth:`physics`); default: the process file's.
        param_set : ndarray of int (n_batches,), optional
            Which set of ``params`` each batch runs with (default: set 0 for all).

        Returns
        -------
        ndarray
            ``state``, advanced.
        """
        p = self.process
        nb = conditions.n_batches
        if not 0 <= after_step <= stop_step <= p.n_steps:
            raise ValueError(f"need 0 <= after_step <= stop_step <= {p.n_steps}, "
                             f"got {after_step}, {stop_step}")
        _check_array("state", state, (nb * p.bars_per_batch, p.n_chars), np.float64)
        plan = np.ascontiguousarray(np.broadcast_to(np.asarray(plan, dtype=np.float64),
                                                    (nb, len(p.levers))))
        if obs is None:
            obs = np.empty((0, 0, 0, 0))
        if latent is None:
            latent = np.empty((0, 0, 0))
        rng = as_rng(rng)
        a = self.arrays
        params, param_set = self._physics_args(params, param_set, nb)
        if self.reference:
            advance_reference(state, p.bars_per_batch, after_step, stop_step, a, plan,
                              conditions.fault, conditions.drift, obs, latent, rng, params, param_set)
        else:
            _kernels.advance(state, p.bars_per_batch, after_step, stop_step, a.kind_id, a.normals, params,
                             param_set, a.target, a.slot, a.lever_first, a.lever_count, a.lever_param,
                             plan, conditions.fault, conditions.drift, a.insp_of_step,
                             a.insp_measures, a.insp_sample, a.gauge_sigma, obs, latent, rng,
                             _NO_NOISE, _NO_NOISE, np.zeros(2, dtype=np.int64))
        return state

    def _physics_args(self, params, param_set, n_batches: int) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(params, param_set)`` for the kernel."""
        a = self.arrays
        if params is None:
            params = a.params[None]
        params = np.ascontiguousarray(params, dtype=np.float64)
        if params.ndim != 3 or params.shape[1:] != a.params.shape:
            raise ValueError(f"params must have shape (n_sets, {a.params.shape[0]}, {a.params.shape[1]}), "
                             f"got {params.shape}")
        if param_set is None:
            param_set = np.zeros(n_batches, dtype=np.int64)
        param_set = np.ascontiguousarray(param_set, dtype=np.int64)
        if param_set.shape != (n_batches,):
            raise ValueError(f"param_set must have one entry per batch ({n_batches}), got {param_set.shape}")
        if n_batches and (param_set.min() < 0 or param_set.max() >= len(params)):
            raise ValueError(f"param_set must index the {len(params)} parameter set(s)")
        return params, param_set

    def in_spec_fraction(self, state: np.ndarray) -> np.ndarray:
        """Share of each batch's bars inside every final tolerance band."""
        return _kernels.in_spec_fraction(state, self.process.bars_per_batch, self.lower, self.upper)

    def accepted(self, state: np.ndarray) -> np.ndarray:
        return self.process.accepts(self.in_spec_fraction(state))

    def flags(self, obs: np.ndarray) -> np.ndarray:
        """Which inspections flag each batch: a gauged sample mean outside its gate.

        Returns bool ``(n_batches, n_insp)``. At the last step the final
        tolerance bands are the gates.
        """
        p = self.process
        out = np.zeros(obs.shape[:2], dtype=bool)
        for q, ins in enumerate(p.inspections):
            out[:, q] = p.gate_flags(ins.step, obs[:, q, :ins.sample, :].mean(axis=1))
        return out

    # ---- convenience -----------------------------------------------------
    def simulate(self, n_batches: int, seed: int | np.random.Generator | None = 0, *,
                 plan: np.ndarray | None = None, conditions: Conditions | None = None,
                 record_latent: bool = False, faults: bool = True,
                 explore: float = 0.0) -> SimulationResult:
        """Run whole batches from raw rod to the final inspection.

        Parameters
        ----------
        n_batches : int
        seed : int or Generator
        plan : ndarray, optional
            Lever values, ``(n_levers,)`` or ``(n_batches, n_levers)``; default nominal.
        conditions : Conditions, optional
            Default: drawn from ``seed`` with faults at their catalogue rates.
        record_latent : bool
            Keep the batch-mean true state after every step.
        faults : bool
            Inject faults (ignored when ``conditions`` is given).
        explore : float
            Share of batches on which past engineers moved one to three levers to a
            random value inside their bounds (ignored when ``plan`` is given). Real
            history holds such interventions; without them lever effects cannot be
            learned from data.

        Returns
        -------
        SimulationResult
        """
        rng = as_rng(seed)
        p = self.process
        if conditions is None:
            conditions = self.sample_conditions(n_batches, rng, faults=faults)
        if plan is None:
            plan = self.exploration_plans(n_batches, explore, rng)
        plan = np.ascontiguousarray(np.broadcast_to(np.asarray(plan, float), (n_batches, len(p.levers))))
        state = self.new_state(n_batches)
        obs = self.new_obs(n_batches)
        latent = np.zeros((n_batches, p.n_steps + 1, p.n_chars)) if record_latent else None
        self.run(state, 0, p.n_steps, plan, conditions, rng, obs=obs, latent=latent)
        frac = self.in_spec_fraction(state)
        return SimulationResult(p, conditions, plan, obs, state, latent, frac,
                                p.accepts(frac), self.flags(obs))

    def exploration_plans(self, n_batches: int, share: float, rng: np.random.Generator) -> np.ndarray:
        """Nominal plans, with ``share`` of batches moving 1-3 random levers to a
        uniform value inside their effective bounds (past interventions)."""
        p = self.process
        plans = np.tile(p.nominal_plan(), (n_batches, 1))
        nl = len(p.levers)
        if share <= 0 or nl == 0:
            return plans
        lo, hi = p.lever_bounds()
        pick = rng.random(n_batches) < share
        count = rng.integers(1, 4, n_batches)
        u = rng.random((n_batches, nl))
        order = np.argsort(rng.random((n_batches, nl)), axis=1)
        ints = np.array([lv.integer for lv in p.levers])
        for b in np.flatnonzero(pick):
            for j in order[b, : count[b]]:
                v = lo[j] + u[b, j] * (hi[j] - lo[j])
                plans[b, j] = np.clip(np.round(v), lo[j], hi[j]) if ints[j] else v
        return plans

    def rollout(self, state: np.ndarray, after_step: int, plans: np.ndarray, n_rollouts: int,
                seed: int, conditions: Conditions, *, future_faults: bool = True,
                per_characteristic: bool = False, params: np.ndarray | None = None,
                param_set: np.ndarray | None = None):
        """Monte Carlo outcome of candidate plans for one batch, with common random numbers.

        Every plan is rolled out ``n_rollouts`` times from the same starting
        bars with the same seed, so plan differences are not masked by noise.

        Parameters
        ----------
        state : ndarray (bars_per_batch, n_chars) or (n_rollouts * bars_per_batch, n_chars)
            One batch's bars after ``after_step``: one state for every rollout,
            or one per rollout (e.g. draws from a posterior over the state).
        after_step : int
        plans : ndarray (n_plans, n_levers)
        n_rollouts : int
        seed : int
        conditions : Conditions
            The batch's conditions (one batch); its future faults are redrawn.
        future_faults : bool
            Draw faults after ``after_step`` at their catalogue rates.
        per_characteristic : bool
            Also return the share of bars inside each characteristic's band.
        params : ndarray (n_sets, n_steps, MAX_PARAMS), optional
            Physics to roll out with (see :meth:`physics`); default: the file's.
        param_set : ndarray of int (n_rollouts,), optional
            The set of ``params`` each rollout runs with; default: rollout ``i``
            takes set ``i`` when there is one set per rollout, else set 0. The same
            for every plan (common random numbers include the physics).

        Returns
        -------
        in_spec : ndarray (n_plans, n_rollouts)
            Share of bars inside every final band at the end of each rollout.
        char_in_spec : ndarray (n_plans, n_rollouts, n_chars)
            Only with ``per_characteristic``.
        """
        p = self.process
        plans = np.atleast_2d(np.asarray(plans, dtype=np.float64))
        state = np.asarray(state, dtype=np.float64)
        if state.shape == (n_rollouts * p.bars_per_batch, p.n_chars):
            base = np.ascontiguousarray(state)
        elif state.shape == (p.bars_per_batch, p.n_chars):
            base = np.ascontiguousarray(np.tile(state, (n_rollouts, 1)))
        else:
            raise ValueError(f"state must have shape {(p.bars_per_batch, p.n_chars)} or "
                             f"{(n_rollouts * p.bars_per_batch, p.n_chars)}, got {state.shape}")
        fut = self.sample_conditions(n_rollouts, np.random.default_rng(seed),
                                     time=np.repeat(conditions.time[:1], n_rollouts),
                                     faults=future_faults, after_step=after_step)
        if params is not None and param_set is None and len(params) == n_rollouts:
            param_set = np.arange(n_rollouts)
        out = np.empty((len(plans), n_rollouts))
        per = np.empty((len(plans), n_rollouts, p.n_chars)) if per_characteristic else None
        for i, plan in enumerate(plans):
            st = base.copy()
            self.run(st, after_step, p.n_steps, plan, fut, np.random.default_rng(seed + 1),
                     params=params, param_set=param_set)
            out[i] = self.in_spec_fraction(st)
            if per is not None:
                per[i] = _kernels.char_in_spec_fraction(st, p.bars_per_batch, self.lower, self.upper)
        return (out, per) if per_characteristic else out


class KernelStep:
    """The kernel call of :meth:`Simulator.run`, prepared once for callers that step often.

    The gymnasium envs advance one batch (or a small group) a few steps at a
    time, thousands of times a second. ``Simulator.run`` would validate every
    argument and take a Generator on each call; a Generator argument alone costs
    the kernel about 12 us, more than a whole env step. So the envs draw an
    episode's random numbers at once (:meth:`draws`), validate their arrays
    once when they make them (:meth:`check`, at reset or construction), and
    each step only forwards to the kernel (:meth:`__call__`). The process arrays
    and physics are bound here, so no env passes the kernel's 26 arguments.

    Parameters
    ----------
    process : Process
    params : ndarray (n_sets, n_steps, MAX_PARAMS), optional
        Step-parameter sets (physics, see :meth:`Simulator.physics`); default:
        the process file's. Checked here, once.

    Examples
    --------
    >>> import numpy as np
    >>> from simulators.process import Simulator, KernelStep
    >>> sim = Simulator()
    >>> k = KernelStep(sim.process)
    >>> cond = sim.sample_conditions(1, 0)
    >>> state, obs = sim.new_state(1), sim.new_obs(1)
    >>> plan, sets = sim.process.nominal_plan()[None].copy(), np.zeros(1, dtype=np.int64)
    >>> noise, unif, cursor = k.draws(np.random.default_rng(0), 1, 0, 10)
    >>> k.check(state, 0, 10, sets, plan, cond.fault, cond.drift, obs, noise, unif, cursor)
    >>> k(state, 0, 10, sets, plan, cond.fault, cond.drift, obs, noise, unif, cursor)
    """

    __slots__ = ("process", "arrays", "params", "max_sample", "_latent", "_needed", "_shapes")

    def __init__(self, process: Process, params: np.ndarray | None = None):
        self.process = process
        #: the process's kernel arrays (``Process.arrays``)
        self.arrays = a = process.arrays
        self.params = a.params[None] if params is None else params
        _check_array("params", self.params, (len(self.params), *a.params.shape), np.float64)
        #: readings per inspection the ``readings`` array must hold (``Simulator.new_obs``)
        self.max_sample = int(a.insp_sample.max()) if len(process.inspections) else 1
        self._latent = np.empty((0, 0, 0))  # the envs never record batch means
        # (n_batches, start, stop) -> draws: the envs ask for a handful of these, over and over
        self._needed: dict[tuple[int, int, int], tuple[int, int]] = {}
        self._shapes: dict[int, tuple] = {}  # n_batches -> what check() wants; checks run at every reset

    def draws_needed(self, n_batches: int, start: int, stop: int) -> tuple[int, int]:
        """(normals, uniforms) the kernel reads advancing ``n_batches`` from after
        step ``start`` through ``stop``; never depends on the state or the plan."""
        key = (n_batches, start, stop)
        got = self._needed.get(key)
        if got is None:
            a = self.arrays
            nn, nu = _kernels.draws_needed(a.kind_id, a.normals, a.insp_of_step, a.insp_measures,
                                           a.insp_sample, n_batches, self.process.bars_per_batch, start, stop)
            got = self._needed[key] = (int(nn), int(nu))
        return got

    def draws(self, rng: np.random.Generator, n_batches: int, start: int,
              stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All random numbers for advancing ``n_batches`` from after ``start`` through ``stop``.

        Returns
        -------
        noise : ndarray (n_normals,)
            Standard normals, drawn first.
        uniform : ndarray (n_uniforms,)
            Uniforms on [0, 1), drawn second.
        cursor : ndarray of int64 (2,)
            Zeros: where the kernel reads next in ``noise`` and ``uniform``; it
            advances them, so later calls go on where the last stopped.
        """
        nn, nu = self.draws_needed(n_batches, start, stop)
        return rng.standard_normal(nn), rng.random(nu), np.zeros(2, dtype=np.int64)

    def check(self, state: np.ndarray, after_step: int, stop_step: int, param_set: np.ndarray,
              plan: np.ndarray, fault: np.ndarray, drift: np.ndarray, readings: np.ndarray,
              noise: np.ndarray | None = None, uniform: np.ndarray | None = None,
              cursor: np.ndarray | None = None) -> None:
        """Raise ``ValueError`` unless these arrays fit the kernel for these steps.

        Call it where the arrays are made (the kernel runs without bounds
        checks). The arguments are those of :meth:`__call__`; ``n_batches`` is
        ``len(plan)``. ``stop_step`` is the last step any later call will reach:
        ``noise`` and ``uniform`` must hold every draw from ``cursor`` up to it.
        Without ``noise`` the draws are not checked (a caller that makes them
        with :meth:`draws` right before each call).
        """
        n_steps = self.arrays.kind_id.shape[0]
        if not 0 <= after_step <= stop_step <= n_steps:
            raise ValueError(f"need 0 <= after_step <= stop_step <= {n_steps}, got {after_step}, {stop_step}")
        nb = len(plan)
        shapes = self._shapes.get(nb) or self._shapes.setdefault(nb, self._shapes_of(nb))
        for name, arr, (shape, dtype) in zip(("plan", "state", "fault", "drift", "readings", "param_set"),
                                             (plan, state, fault, drift, readings, param_set), shapes):
            _check_array(name, arr, shape, dtype)
        sets = param_set.tolist()  # a few entries: Python's min/max beat NumPy's call overhead
        if sets and (min(sets) < 0 or max(sets) >= len(self.params)):
            raise ValueError(f"param_set must index the {len(self.params)} parameter set(s), "
                             f"got {min(sets)} .. {max(sets)}")
        if noise is None:
            return
        _check_array("cursor", cursor, (2,), _I64)
        nn, nu = self.draws_needed(nb, after_step, stop_step)
        for name, arr, need, at in (("noise", noise, nn, cursor[0]), ("uniform", uniform, nu, cursor[1])):
            _check_array(name, arr, (None,), _F64)
            if len(arr) < at + need:
                raise ValueError(f"{name} holds {len(arr)} draws; steps {after_step + 1}..{stop_step} of "
                                 f"{nb} batch(es) read {need} from position {at}")

    def _shapes_of(self, nb: int) -> tuple:
        """(shape, dtype) of plan, state, fault, drift, readings and param_set for ``nb`` batches."""
        p = self.process
        return (((nb, len(p.levers)), _F64), ((nb * p.bars_per_batch, p.n_chars), _F64),
                ((nb, p.n_steps), _F64), ((nb, p.n_steps), _F64),
                ((nb, len(p.inspections), self.max_sample, p.n_chars), _F64), ((nb,), _I64))

    def __call__(self, state: np.ndarray, after_step: int, stop_step: int, param_set: np.ndarray,
                 plan: np.ndarray, fault: np.ndarray, drift: np.ndarray, readings: np.ndarray,
                 noise: np.ndarray, uniform: np.ndarray, cursor: np.ndarray) -> None:
        """Advance ``state`` in place from after ``after_step`` through ``stop_step``.

        No checks (see :meth:`check`): this is the envs' per-step call.

        Parameters
        ----------
        state : ndarray (n_batches * bars_per_batch, n_chars)
            True characteristics of every bar, in their own units; updated.
        after_step, stop_step : int
            ``0 <= after_step <= stop_step <= n_steps``.
        param_set : ndarray of int64 (n_batches,)
            Which set of ``params`` each batch runs with.
        plan : ndarray (n_batches, n_levers)
            Lever values in physical units.
        fault, drift : ndarray (n_batches, n_steps)
            As in :class:`Conditions`.
        readings : ndarray (n_batches, n_insp, max_sample, n_chars)
            Gauge readings of the inspections passed are written here.
        noise, uniform, cursor : ndarray
            Pre-drawn random numbers and where to read next (see :meth:`draws`).
        """
        a = self.arrays
        _kernels.advance(state, self.process.bars_per_batch, after_step, stop_step, a.kind_id, a.normals,
                         self.params, param_set, a.target, a.slot, a.lever_first, a.lever_count,
                         a.lever_param, plan, fault, drift, a.insp_of_step, a.insp_measures,
                         a.insp_sample, a.gauge_sigma, readings, self._latent, None, noise, uniform, cursor)
