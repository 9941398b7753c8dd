"""Batch status and decision outcome labels: the rules the service and the CLI show.

A batch's status sums up its current recommendation for the batch list; a
decision's outcome is what happened to the batch afterwards, for the decision
export that retraining reads. Both are domain rules, so they live here and the
shells only format them.

Layer: with :mod:`recovery.recommend` (reads its recommendations, imports
:mod:`recovery.causal` queries).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["STATUSES", "ON_TRACK_P", "RECOVERABLE_P", "batch_status", "final_outcomes", "outcome_label"]

#: Every status a batch can have, in the order the batch list explains them.
STATUSES = ("on track", "at risk", "recoverable", "scrap recommended", "finished")
#: P(accept) when nothing is done (posterior mean) from which a batch the
#: recommendation leaves alone is "on track" rather than "at risk".
ON_TRACK_P = 0.9
#: P(accept) under the plan (posterior mean) from which an intervention makes
#: the batch "recoverable": more likely saved than not.
RECOVERABLE_P = 0.5


def batch_status(rec, *, last_step: int, n_steps: int) -> str:
    """The batch's status from its current recommendation.

    Parameters
    ----------
    rec : Recommendation or None
        The batch's recommendation (:func:`recovery.recommend.recommend`);
        None when there is none (the batch is finished, or it cannot be planned).
    last_step : int
        The last step with data for the batch.
    n_steps : int
        Steps of the process.

    Returns
    -------
    str
        One of :data:`STATUSES`.

    Examples
    --------
    >>> batch_status(None, last_step=12, n_steps=12)
    'finished'
    >>> batch_status(None, last_step=5, n_steps=12)
    'at risk'
    """
    if rec is None:
        # without a recommendation an unfinished batch is not known to be fine
        return "finished" if last_step >= n_steps else "at risk"
    if rec.decision == "scrap":
        return "scrap recommended"
    if rec.p_accept_do_nothing["mean"] >= ON_TRACK_P and rec.decision == "continue":
        return "on track"
    if rec.decision == "intervene" and rec.p_accept["mean"] >= RECOVERABLE_P:
        return "recoverable"
    return "at risk"


def final_outcomes(process, steps: pd.DataFrame) -> dict[str, str]:
    """batch id -> ``"accepted"``/``"rejected"`` for every batch whose final inspection
    has readings in ``steps``; batches without them are left out (pending).

    The final inspection's verdict as the simulator applies it: ``"rejected"`` when
    a sample mean lies outside its final band (:meth:`Process.gate_flags` at the
    last step), ``"accepted"`` otherwise.

    Parameters
    ----------
    process : simulators.definition.Process
    steps : DataFrame
        Step data of any number of batches (schema of :mod:`simulators.schema`).
    """
    h = steps[(steps["kind"] == "measurement") & (steps["step"] == process.n_steps)]
    if not len(h):
        return {}
    means = h.groupby(["batch_id", "variable"], observed=True)["value"].mean().unstack()
    arr = np.full((len(means), process.n_chars), np.nan)
    for name, i in process.char_index.items():
        if name in means.columns:
            arr[:, i] = means[name].to_numpy(float)
    flags = process.gate_flags(process.n_steps, arr)
    return {str(b): ("rejected" if f else "accepted") for b, f in zip(means.index, flags)}


def outcome_label(model, history: pd.DataFrame, batch_id: str) -> str:
    """What became of one batch: :func:`final_outcomes` of its step data, or
    ``"pending"`` while the final inspection has no readings.

    Parameters
    ----------
    model : CausalModel
        The fitted model (its process gives the final step and the bands).
    history : DataFrame
        The batch's step data (schema of :mod:`simulators.schema`).
    batch_id : str
    """
    own = history[history["batch_id"].astype(str) == str(batch_id)]
    return final_outcomes(model.graph_.process, own).get(str(batch_id), "pending")
