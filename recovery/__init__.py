"""recovery: save out-of-spec batches instead of scrapping them.

Layers, each importing only those below it:

- ``recovery.data``: step-data ingestion and the store
- ``recovery.causal``: the Bayesian causal model and per-batch queries
- ``recovery.agents``: planners, RL and baselines behind one interface
- ``recovery.evaluate``: closed-loop evaluation against an oracle
- ``recovery.cli``: the thin command-line shell
"""

__version__ = "0.1.0"
