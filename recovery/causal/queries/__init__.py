"""Per-batch queries on a fitted :class:`~recovery.causal.model.CausalModel`.

Each query takes one batch's step data up to some step ``k`` and answers from
the stored posterior draws, without any per-batch MCMC:

- :func:`state` / :func:`state_draws` (:mod:`.state`): the hidden batch-mean
  characteristics at the last inspection up to ``k`` (a Kalman filter per
  draw, fault-shift mixture included);
- :func:`predict` / :func:`predict_many` (:mod:`.predict`): the final
  characteristics and P(accept) under lever plans for the steps after ``k``;
- :func:`root_cause` (:mod:`.root_cause`): posterior probabilities over (step,
  fault or characteristic) as the origin of the deviation, with the causal
  path in words.

Every answer says whether the batch or the plan lies outside what the training
data cover (``out_of_range`` and ``reasons``), instead of extrapolating silently.

May import: ``simulators``, ``recovery.causal``'s lower modules (errors,
summaries, layout, likelihood, ``_filter``); never ``recovery.causal.model``
at run time (the model imports the queries).
"""

from recovery.causal.queries._batch import HDI_PROB, BatchView, batches_in, hdi, view
from recovery.causal.queries.predict import PlanPredictions, Prediction, predict, predict_many
from recovery.causal.queries.root_cause import Cause, RootCause, root_cause
from recovery.causal.queries.state import Estimate, StateDraws, StateEstimate, state, state_draws

__all__ = [
    "BatchView", "Estimate", "StateEstimate", "Prediction", "PlanPredictions", "Cause",
    "RootCause", "StateDraws", "view", "batches_in", "state", "state_draws", "predict", "predict_many",
    "root_cause", "hdi", "HDI_PROB",
]
