"""The end-to-end pipeline: history -> fitted model -> trained policy, loaded or built.

``recovery evaluate`` runs from nothing: without ``--model`` it simulates
``--train-batches`` historical batches on a separate seed and fits the causal
model on them; without ``--policy`` it trains the rl agent with its default
budget. Both are saved under ``--workdir`` (default: a folder in the user's
cache directory named after the process digest and seed), so workers of a
cluster can load them by path and a second run reuses them.

With a plant (``evaluate --plant``), the history is simulated from the plant
while the model is fitted, and the physics calibrated, with the process file
the agents know. The calibration lives in the model folder (``calibration/``)
and everything that plans picks it up from there.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["load_model", "load_policy", "load_posterior", "calibrate_into", "load_or_fit_model",
           "load_or_train_policy", "workdir", "CALIBRATION"]

#: The calibration's folder inside a model folder.
CALIBRATION = "calibration"
#: Where a calibration that did not converge is kept (never used to plan).
NOT_CONVERGED = "calibration-not-converged"


def load_model(path: str | Path, *, posterior: str = "full"):
    """Load a fitted causal model saved with ``save``.

    ``posterior="draws"`` reads only the draws the queries use and leaves ArviZ
    out until ``idata_`` is asked for (see :meth:`CausalModel.load`).
    """
    from recovery.causal.model import CausalModel

    return CausalModel.load(path, posterior=posterior)


def load_policy(path: str | Path, process=None):
    """Load a trained rl policy."""
    from recovery.agents.rl import load_policy as _load

    return _load(path, process)


def load_posterior(model_dir: str | Path):
    """The calibration saved in a model folder (``MODEL_DIR/calibration/``), or None.

    Raises
    ------
    recovery.calibration.CalibrationLoadError
        A calibration is there but cannot be read.
    """
    from recovery.calibration import PhysicsPosterior

    d = Path(model_dir) / CALIBRATION
    return PhysicsPosterior.load(d) if PhysicsPosterior.exists(d) else None


def calibrate_into(history, process, model_dir: str | Path, *, seed: int, log, config=None):
    """Calibrate the process's physics on ``history`` and save it in the model folder.

    A converged calibration goes to ``MODEL_DIR/calibration/``, where planners
    pick it up; one that did not converge goes to ``calibration-not-converged/``
    for inspection only (as ``recovery calibrate`` does), and plans keep the
    file's physics.

    Returns
    -------
    PhysicsPosterior or None
        None, with a line on ``log``, when this version has no
        ``recovery.calibration.calibrate``, the history cannot be calibrated on
        (``CalibrationError``: the message says why), or it did not converge.
    """
    try:
        from recovery.calibration import CalibrationError, calibrate
    except ImportError:
        print("calibration  skipped: this version has no recovery.calibration.calibrate; "
              "plans use the process file's physics", file=log)
        return None
    try:
        post = calibrate(history, process, seed=seed, config=config)
    except CalibrationError as exc:
        print(f"calibration  skipped: {exc}; plans use the process file's physics", file=log)
        return None
    failed = post.failed_checks()
    if not post.converged:
        d = Path(model_dir) / NOT_CONVERGED
        post.save(d)
        print(f"calibration  NOT converged ({post.method}); kept in {d} for inspection only: plans use "
              f"the process file's physics", file=log)
        return None
    post.save(Path(model_dir) / CALIBRATION)
    print(f"calibration  {post.method}, {post.n_draws} draws of {len(post.keys)} physics parameters, "
          f"{len(failed)} failed predictive check(s); saved in {Path(model_dir) / CALIBRATION}", file=log)
    return post


def calibration_config(budget: str):
    """The calibration settings ``evaluate`` uses when it fits from nothing (None: the default)."""
    if budget != "tiny":
        return None
    from recovery.calibration import CalibrationConfig

    return CalibrationConfig(design_points=30, rounds=1, extra_rounds=0, bootstrap=50, draws=50, tune=50,
                             check_draws=2)


def workdir(args, process) -> Path:
    import platformdirs

    base = Path(getattr(args, "workdir", None) or platformdirs.user_cache_dir("recovery"))
    d = base / f"{process.name}-{process.digest}-seed{args.seed}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def fit_config(budget: str, seed: int):
    """The fit settings ``evaluate`` uses when it fits from nothing."""
    from recovery.causal.model import FitConfig

    if budget == "tiny":
        return FitConfig(method="advi", advi_steps=300, draws=50, seed=seed, keep_draws=50)
    return FitConfig(method="nuts", draws=500, tune=500, chains=2, seed=seed, keep_draws=500)


def load_or_fit_model(args, process, *, log, plant=None):
    """(model, model_dir): ``--model``, or a model fitted on simulated history.

    History: ``--train-batches`` batches simulated on seed ``seed + 1`` (never the
    evaluation's own seed), with past engineers' lever moves on a fifth of them,
    from ``plant`` (default: the process file itself). The model is fitted with
    ``process`` and, with a ``plant`` and unless ``args.no_calibrate``, the physics
    calibrated on the same history into the model folder. Both are saved under :func:`workdir` and
    reused by a later run.
    """
    from recovery.errors import UserError

    if getattr(args, "model", None):
        try:
            return load_model(args.model), str(args.model)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"--model {args.model}: {exc}") from None
    from recovery.causal.model import CausalModel
    from simulators.process import Simulator

    budget = getattr(args, "budget", "default")
    world = process if plant is None else plant
    # the history (and so the model) depends on the plant: one folder per plant
    suffix = "" if plant is None else f"-plant-{plant.digest}"
    d = workdir(args, process) / f"model-{args.train_batches}-{budget}{suffix}"
    # Without a plant the world is the process file itself: evaluate behaves as it
    # did before calibration existed (same figures, same time). With a plant, the
    # agents' physics is calibrated on the plant's history unless --no-calibrate.
    calibrate = plant is not None and not getattr(args, "no_calibrate", False)

    def history():
        return Simulator(world).simulate(args.train_batches, args.seed + 1, explore=0.2).observations

    if (d / "meta.json").exists() or (d / "model.json").exists():
        try:
            model = load_model(d)
            print(f"using the model fitted earlier in {d}", file=log)
            if calibrate and not (d / CALIBRATION).exists() and not (d / NOT_CONVERGED).exists():
                calibrate_into(history(), process, d, seed=args.seed, log=log,
                               config=calibration_config(budget))
            return model, str(d)
        except (FileNotFoundError, ValueError) as exc:
            print(f"not using the model in {d} ({exc}); fitting a new one", file=log)
    where = "" if plant is None else f" of plant '{plant.source}'"
    print(f"simulating {args.train_batches} historical batches{where} (seed {args.seed + 1}) and fitting "
          f"the causal model ...", file=log)
    data = history()
    model = CausalModel(process, config=fit_config(budget, args.seed)).fit(data, progress=not getattr(args, "quiet", False))
    for line in model.report_.lines():
        print("  " + line, file=log)
    model.save(d)
    if calibrate:
        calibrate_into(data, process, d, seed=args.seed, log=log, config=calibration_config(budget))
    return model, str(d)


def load_or_train_policy(args, process, model, *, log, posterior=None):
    """(policy, path): ``--policy``, or PPO trained with the default budget and saved.

    With a ``posterior`` (the model folder's calibration) the policy trains on the
    calibrated physics (``train_policy(posterior=...)``), cached apart from one
    trained on the file.
    """
    from recovery.agents.rl import DEFAULT_TIMESTEPS, train_policy
    from recovery.errors import UserError

    if getattr(args, "policy", None):
        try:
            return load_policy(args.policy), str(args.policy)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"--policy {args.policy}: {exc}") from None
    budget = getattr(args, "budget", "default")
    steps = 2_000 if budget == "tiny" else DEFAULT_TIMESTEPS
    d = workdir(args, process) / f"policy-residual-{steps}"  # policies from scratch were "policy-{steps}"
    if posterior is not None:
        import hashlib
        h = hashlib.sha256(posterior.draws.tobytes() + repr(posterior.keys).encode()).hexdigest()[:12]
        d = d.with_name(d.name + f"-calibrated-{h}")
    if (d / "ppo.zip").exists():
        print(f"using the policy trained earlier in {d}", file=log)
        return load_policy(d, process), str(d)
    how = "on the calibrated physics" if posterior is not None else "on the process file's physics"
    print(f"training the rl policy ({steps} steps, {how}) ...", file=log)
    policy = train_policy(process, seed=args.seed, total_timesteps=steps, posterior=posterior)
    policy.save(d)
    return policy, str(d)
