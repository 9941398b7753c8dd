"""Fixtures for the data tests: one store per backend, simulated step data, the partner files."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["duckdb", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty store on each backend (the same test runs against both)."""
    if request.param == "duckdb":
        return f"duckdb://{tmp_path / 'store.duckdb'}"
    return request.getfixturevalue("postgresql_url")


@pytest.fixture
def store(store_url):
    from recovery.data.store import open_store

    with open_store(store_url) as st:
        yield st


@pytest.fixture(scope="session")
def small_history(tmp_path_factory):
    """Simulated step data of the small process (seeded): (parquet path, frame)."""
    from simulators.process import Simulator

    df = Simulator("small").simulate(12, seed=5, explore=1.0).observations
    path = tmp_path_factory.mktemp("sim") / "history.parquet"
    df.to_parquet(path)
    return path, df


from tests.conftest import PARTNER_DEMO, real_cip_dmd_or_skip  # noqa: E402,F401
