"""A fitted causal model of the small process, shared by the tests that need one.

NUTS (nutpie) with a short chain: about a minute, once per test session. ADVI
would be faster but its mean-field fit misses the lever effects a planner needs.
"""

import pytest


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """(model, saved folder): fitted on 400 simulated batches of the small process."""
    from recovery.causal.model import CausalModel, FitConfig
    from simulators.process import Simulator

    data = Simulator("small").simulate(400, 101, explore=0.3).observations
    model = CausalModel("small", config=FitConfig(method="nuts", sampler="auto", draws=150, tune=150,
                                                  chains=1, keep_draws=150, seed=0)).fit(data, progress=False)
    d = tmp_path_factory.mktemp("small-model")
    model.save(d)
    return model, d
