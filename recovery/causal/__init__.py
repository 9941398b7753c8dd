"""The Bayesian causal process model and its per-batch queries.

- :mod:`recovery.causal.graph`: the causal graph, from the process definition
  and the engineers' edits (``examples/expert_edits.toml``);
- :mod:`recovery.causal.model`: :class:`CausalModel`, a PyMC estimator
  (``fit``, ``update``, ``save``, ``load``, ``do``);
- :mod:`recovery.causal.queries`: ``state``, ``predict``, ``predict_many`` and
  ``root_cause`` for one batch, from the stored posterior draws;
- :mod:`recovery.causal._filter`: the numba kernels behind the queries.

PyMC and nutpie are imported only when a model is fitted, so loading a model
and answering queries stays light.

Examples
--------
>>> from recovery.causal import CausalModel, FitConfig
>>> # model = CausalModel("small", config=FitConfig(method="advi")).fit(step_data)
>>> # model.root_cause(history_of_one_batch).causes[0].cause
"""

from recovery.causal.graph import CausalGraph, ExpertEditError, ExpertEdits, load_edits
from recovery.causal.model import (CausalModel, DataError, FitConfig, FitReport, ModelLoadError,
                                   PriorConfig, summarise)

__all__ = ["CausalGraph", "CausalModel", "DataError", "ExpertEditError", "ExpertEdits", "FitConfig",
           "FitReport", "ModelLoadError", "PriorConfig", "load_edits", "summarise"]
