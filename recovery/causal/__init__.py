"""The Bayesian causal process model and its per-batch queries.

Modules, lowest first (each imports only those above it):

- :mod:`~recovery.causal.errors`, :mod:`~recovery.causal.config`: ``DataError``,
  ``ModelLoadError``; ``FitConfig``, ``PriorConfig``;
- :mod:`~recovery.causal.edits`: the engineers' edit file (``examples/expert_edits.toml``);
  :mod:`~recovery.causal.segments`: the step graph composed over each segment;
  :mod:`~recovery.causal.graph`: the causal graph, from the process definition
  and the edits (re-exports the names of both);
- :mod:`~recovery.causal.summaries`: step data -> per-batch summaries, training ranges;
- :mod:`~recovery.causal.components`: bar-to-bar spread and crack (conjugate);
- :mod:`~recovery.causal.layout`: standardisation, the parameter layout and
  its decoding, ``segment_fault_rates``;
- :mod:`~recovery.causal.likelihood`: the likelihood (PyTensor and NumPy) and
  the one noise covariance; :mod:`~recovery.causal.robust`: the sandwich widening;
- :mod:`~recovery.causal.posterior`: draws, decoded draws, ArviZ view;
  :mod:`~recovery.causal.report`: ``FitReport``;
  :mod:`~recovery.causal.sampling`: PyMC/nutpie (imported only when fitting);
- :mod:`~recovery.causal._filter`: the numba kernels behind the queries;
- :mod:`~recovery.causal.queries`: ``state``, ``predict``, ``predict_many`` and
  ``root_cause`` for one batch (never imports the model class);
- :mod:`~recovery.causal.persistence`: save/load; :mod:`~recovery.causal.model`:
  :class:`CausalModel`, the estimator (``fit``, ``update``, ``save``, ``load``, ``do``);
- :mod:`~recovery.causal.validation`: checks of a fitted model against the simulator.

Layer: imports ``simulators`` and ``recovery.data`` only (never agents,
evaluate, pipeline, service, commands or the CLI).

PyMC and nutpie are imported only when a model is fitted, so loading a model
and answering queries stays light.

Examples
--------
>>> from recovery.causal import CausalModel, FitConfig
>>> # model = CausalModel("small", config=FitConfig(method="advi")).fit(step_data)
>>> # model.root_cause(history_of_one_batch).causes[0].cause
"""

import importlib

# The names below load on first use (PEP 562), so importing one light module of
# the package (errors, persistence, layout: what ``recovery health`` reads) does
# not import the estimator and the numba queries behind it.
_EXPORTS = {"CausalGraph": "graph", "ExpertEditError": "graph", "ExpertEdits": "graph", "load_edits": "graph",
            "CausalModel": "model", "DataError": "model", "FitConfig": "model", "FitReport": "model",
            "ModelLoadError": "model", "PriorConfig": "model", "summarise": "model"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"recovery.causal.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'recovery.causal' has no attribute '{name}'")


__all__ = ["CausalGraph", "CausalModel", "DataError", "ExpertEditError", "ExpertEdits", "FitConfig",
           "FitReport", "ModelLoadError", "PriorConfig", "load_edits", "summarise"]
