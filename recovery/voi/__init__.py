"""Value of information: which extra measurement pays.

For one batch now (``recovery measure``): preposterior analysis of the
measurements that could be taken before the next lever decision. For the plant
over a season (``recovery sensors``): the expected gain of changes to the
inspection plan, per 1,000 batches, against their cost.

Layer: above ``recovery.agents`` (it re-plans with the agents on simulated
readings), beside ``recovery.recommend``; it may import ``simulators``,
``recovery.data``, ``recovery.causal``, ``recovery.calibration`` and
``recovery.agents``, never the shells.
"""

from recovery.agents import register_agent


def _planner_measure(sim, *, model=None, budget: str = "default", posterior=None):
    if model is None:
        raise ValueError("the planner+measure agent needs a fitted causal model")
    from recovery.voi.agent import MeasureFirstAgent
    return MeasureFirstAgent(model, budget=budget, posterior=posterior)


register_agent("planner+measure", _planner_measure)
