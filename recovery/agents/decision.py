"""Continue, intervene or scrap now: the economics of one decision.

Expected cost of an option, in currency, against the ideal of an accepted
batch with no intervention (so that ``net value = batch_value - cost``):

- continue as is:  ``continue_cost + (1 - p0) * (scrap_cost + batch_value)``
- intervene:       ``lever_cost + (1 - p1) * (scrap_cost + batch_value)``
- scrap now:       ``scrap_cost + batch_value - processing_cost_per_step * remaining_steps``

where ``p0`` and ``p1`` are the probabilities that the batch ends accepted
under the current plan and under the new one, and the lever costs count the
levers still to come (what is spent is spent). The option with the lowest expected cost wins;
intervening must beat continuing by ``min_gain`` to be worth the disruption.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulators.definition import Process

__all__ = ["Decision", "choose_action"]


@dataclass(frozen=True)
class Decision:
    """The chosen option and the expected cost of each (currency)."""

    decision: str                  # "continue" | "intervene" | "scrap"
    expected_cost: dict[str, float]
    lever_cost: float


def choose_action(process: Process, step: int, p_continue: float, p_plan: float, lever_cost: float, *,
           continue_cost: float = 0.0, min_gain: float = 1.0) -> Decision:
    """Pick continue, intervene or scrap for a batch after ``step``.

    Parameters
    ----------
    process : Process
    step : int
        Last completed step.
    p_continue, p_plan : float
        P(accept) without and with the plan.
    lever_cost : float
        Cost of the new plan's levers still to come (currency).
    continue_cost : float
        Cost of the current plan's levers still to come (0 when nothing is planned).
    min_gain : float
        Expected saving (currency) an intervention must bring over continuing.

    Examples
    --------
    >>> from simulators import load_process
    >>> p = load_process()
    >>> choose_action(p, 15, 0.0, 0.9, 200.0).decision
    'intervene'
    >>> choose_action(p, 25, 0.0, 0.0, 0.0).decision
    'scrap'
    """
    eco = process.economics
    loss = eco.scrap_cost + eco.batch_value
    costs = {
        "continue": continue_cost + (1.0 - p_continue) * loss,
        "intervene": lever_cost + (1.0 - p_plan) * loss,
        "scrap": loss - eco.processing_cost_per_step * (process.n_steps - step),
    }
    if costs["intervene"] > costs["continue"] - min_gain:
        costs_considered = {k: v for k, v in costs.items() if k != "intervene"}
    else:
        costs_considered = costs
    choice = min(costs_considered, key=costs_considered.get)
    return Decision(choice, costs, lever_cost)
