"""Shared, seeded fixtures: a small simulated history and a tiny fitted model.

The model is fitted once per session with ADVI on the 12-step process (about
15 s), so the fast tests exercise the whole pipeline without MCMC.
"""

import warnings

import numpy as np
import pytest

from recovery.causal.model import CausalModel, FitConfig
from simulators.process import Simulator


@pytest.fixture(scope="session")
def small_sim():
    return Simulator("small")


@pytest.fixture(scope="session")
def small_history(small_sim):
    """200 historical batches, faults at catalogue rates, levers explored on 30%."""
    return small_sim.simulate(200, seed=5, explore=0.3, record_latent=True)


@pytest.fixture(scope="session")
def advi_model(small_history):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = FitConfig(method="advi", advi_steps=3000, draws=300, seed=1)
        return CausalModel("small", config=cfg).fit(small_history.observations, progress=False)


@pytest.fixture(scope="session")
def fresh(small_sim):
    """Fresh batches (another seed) with their true latent state."""
    return small_sim.simulate(40, seed=99, record_latent=True)


def one_batch(sim, res, b, upto_step=None):
    """Step data of batch ``b`` of a simulation result, up to a step."""
    from simulators.schema import observations_frame

    return observations_frame(sim.process, res.conditions.take([b]), res.obs[b:b + 1],
                              res.plan[b:b + 1], upto_step=upto_step)


def seeded(x):
    return np.random.default_rng(x)


@pytest.fixture(scope="session", autouse=True)
def _fit_cache(tmp_path_factory):
    """Fits in tests compile into a folder of their own, never the user's cache."""
    import os

    from recovery.causal.compiled import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("fit-cache"))
    yield
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old
