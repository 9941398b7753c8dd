"""Capability figures against values whose mean, spread and correlation are known by construction."""

import numpy as np
import pandas as pd
import pytest

from recovery.data.capability import capability_table, quality_report
from recovery.data.ingest import ingest
from recovery.data.store import open_store
from simulators.definition import load_process
from simulators.schema import COLUMNS


def _standardised(n, seed):
    z = np.random.default_rng(seed).standard_normal(n)
    return (z - z.mean()) / z.std(ddof=1)


def _frame(variable, values, step, unit):
    n = len(values)
    return pd.DataFrame({
        "batch_id": [f"B-{i // 4}" for i in range(n)], "bar_id": pd.array(np.arange(n) % 4, dtype="Int64"),
        "step": step, "factory": "FA1", "partner": "A", "variable": variable, "value": values,
        "unit": unit, "kind": "measurement",
        "timestamp": pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")}).astype(COLUMNS)


def test_cp_cpk_and_out_of_spec_match_their_definitions():
    p = load_process("small")  # diameter band [15.975, 16.025] mm
    mean, s = 16.010, 0.005
    x = mean + s * _standardised(400, 1)
    caps = capability_table(_frame("diameter", x, 3, "mm"), p)
    (c,) = caps
    assert (c.step, c.stage, c.variable, c.n) == (3, "inspection after drawing", "diameter", 400)
    assert c.mean == pytest.approx(mean) and c.std == pytest.approx(s)
    assert c.pp == pytest.approx(0.05 / (6 * s))
    assert c.ppk == pytest.approx((16.025 - mean) / (3 * s))
    sw = np.abs(np.diff(x)).mean() / 1.128
    assert c.std_within == pytest.approx(sw)
    assert c.cp == pytest.approx(0.05 / (6 * sw)) and c.cpk == pytest.approx((16.025 - mean) / (3 * sw))
    assert c.std_within == pytest.approx(s, rel=0.1)      # independent parts: short term ~ long term
    assert c.out_of_spec == int(((x < 15.975) | (x > 16.025)).sum()) > 0
    (u,) = capability_table(_frame("diameter", x, 3, "mm"), p, specified={"diameter": False})
    assert u.cp is None and u.cpk is None and u.pp is None and u.ppk is None
    assert u.out_of_spec is None and u.mean == pytest.approx(mean)


def test_short_term_capability_follows_production_order():
    p = load_process("small")  # diameter band [15.975, 16.025] mm
    # a process that shifts once: tight from part to part, wide overall
    x = np.r_[np.full(50, 15.99), np.full(50, 16.01)] + 0.001 * _standardised(100, 4)
    df = _frame("diameter", x, 3, "mm")
    df["timestamp"] = pd.date_range("2026-01-01", periods=100, freq="min", tz="UTC")
    (c,) = capability_table(df, p)
    assert c.cp > 4 * c.pp                                   # Cp sees the part-to-part spread only
    # the same rows stored in another order: the timestamps restore production order
    shuffled = df.sample(frac=1.0, random_state=0)
    (d,) = capability_table(shuffled, p)
    assert d.std_within == pytest.approx(c.std_within) and d.cp == pytest.approx(c.cp)
    # without timestamps the stored order is the production order, and a shuffle spoils it
    shuffled["timestamp"] = pd.NaT
    (e,) = capability_table(shuffled, p)
    assert e.cp < 2 * e.pp


def test_genealogy_relation_recovers_a_known_correlation(tmp_path):
    n, rho = 300, 0.6
    a, b = _standardised(n, 2), _standardised(n, 3)
    parent = 0.02 * a
    child = 0.004 * (rho * a + np.sqrt(1 - rho ** 2) * b)
    ids = [f"{1000 + i // 4:04d}{i % 4 + 1:02d}" for i in range(n)]
    saw, mill = tmp_path / "saw.csv", tmp_path / "mill.csv"
    pd.DataFrame({"teil": ids, "d": 16.1 + parent}).to_csv(saw, index=False)
    pd.DataFrame({"teil": ids, "d": 16.0 + child}).to_csv(mill, index=False)
    common = ('[mapping]\nprocess = "small"\npartner = "A"\n[ids]\npart = "teil"\n'
              "pattern = '^(?P<batch>\\d{4})(?P<bar>\\d{2})$'\n")
    m1, m2 = tmp_path / "saw.toml", tmp_path / "mill.toml"
    m1.write_text(common + '[[columns]]\ncolumn = "d"\nvariable = "diameter"\nstep = 3\nunit = "mm"\n')
    m2.write_text(common + '[genealogy]\nparent_step = 3\n[[columns]]\ncolumn = "d"\n'
                           'variable = "diameter"\nstep = 6\nunit = "mm"\n')
    with open_store(f"duckdb://{tmp_path / 's.duckdb'}") as st:
        assert ingest(saw, store=st, mapping=m1).accepted == n
        assert ingest(mill, store=st, mapping=m2).accepted == n
        rep = quality_report(st)
    (r,) = rep.relations
    expected = np.corrcoef(parent, child)[0, 1]
    assert (r.parent_step, r.child_step, r.n) == (3, 6, n)
    assert r.pearson_r == pytest.approx(expected, abs=1e-9) and abs(r.pearson_r - rho) < 0.1
    assert r.p_value < 1e-20
    assert rep.links.values.tolist() == [[3, 6, n, n, 0]]
