"""recovery: save out-of-spec batches instead of scrapping them.

Layers, lowest first; a module imports only its own layer and those below it
(``tests/test_layers.py`` enforces :data:`LAYERS`; ``docs/architecture.md``
draws them)::

    simulators          physics, process files, gymnasium envs (never imports recovery)
    recovery, .errors, .distributed
                        the package itself, the errors every layer may raise, and the
                        Dask plumbing (imports only simulators) that campaigns and
                        calibration both spread work with
    recovery.data       step-data ingestion, partner mappings, the store
    recovery.causal     the Bayesian causal model and its per-batch queries
    recovery.calibration  the plant's physics posterior
    recovery.agents     planners, RL and baselines behind one interface
    recovery.recommend, .evaluate, .pipeline, .tuning, .status, .decisions, .health,
    .track_record, .voi
                        the engineer's answer, closed-loop evaluation, the end-to-end runs,
                        batch status and outcome labels, recording decisions, the value of
                        an extra measurement
    recovery.service, .commands, .cli
                        thin shells: HTTP service, CLI subcommands, the CLI
"""

__version__ = "0.1.0"

#: The layer order, lowest first: each entry lists the modules (and packages,
#: with everything under them) of one layer. ``simulators`` sits below all of it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("recovery", "recovery.errors", "recovery.distributed"),
    ("recovery.data",),
    ("recovery.causal",),
    ("recovery.calibration",),
    ("recovery.agents",),
    ("recovery.recommend", "recovery.evaluate", "recovery.pipeline", "recovery.tuning",
     "recovery.status", "recovery.decisions", "recovery.health", "recovery.track_record",
     "recovery.voi"),
    ("recovery.service", "recovery.commands", "recovery.cli"),
)
