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
