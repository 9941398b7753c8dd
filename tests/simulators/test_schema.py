"""The step-data schema: the simulator writes it, validation names bad rows."""

import numpy as np
import pandas as pd
import pytest

from simulators.process import Simulator
from simulators.schema import COLUMNS, SchemaError, validate


@pytest.fixture(scope="module")
def data():
    sim = Simulator("small")
    res = sim.simulate(5, seed=2, explore=1.0)
    return sim, res, res.observations


def test_simulated_data_is_in_the_schema(data):
    sim, res, df = data
    out = validate(df, sim.process)
    assert list(out.columns) == list(COLUMNS)
    assert set(out["kind"]) == {"measurement", "lever", "context"}
    # one row per gauged value: every finite gauge reading appears once
    assert (out["kind"] == "measurement").sum() == np.isfinite(res.obs).sum()
    # batch-level rows have no bar id, measurements have one
    assert out.loc[out.kind == "lever", "bar_id"].isna().all()
    assert out.loc[out.kind == "measurement", "bar_id"].notna().all()


def test_observed_data_holds_no_ground_truth(data):
    _, res, df = data
    assert not set(df["variable"]) & {f.name for f in res.process.faults}
    assert "fault" not in df.columns and "magnitude" not in df.columns


def test_levers_written_are_the_levers_used(data):
    _, res, df = data
    lev = df[df.kind == "lever"]
    p = res.process
    for b, bid in enumerate(res.conditions.batch_ids):
        got = lev[lev.batch_id == bid].set_index("variable")["value"]
        for j, lv in enumerate(p.levers):
            assert got[lv.name] == res.plan[b, j]


def _fails(df, process=None):
    with pytest.raises(SchemaError) as err:
        validate(df, process)
    return err.value.failures


def test_nan_measurement_is_refused_with_its_row(data):
    sim, _, df = data
    bad = df.copy()
    i = int(np.flatnonzero(bad.kind == "measurement")[3])
    bad.loc[i, "value"] = np.nan
    f = _fails(bad)
    assert list(f["row"]) == [i]


def test_unknown_step_variable_unit_and_lever_bounds(data):
    sim, _, df = data
    bad = df.copy()
    m = np.flatnonzero(bad.kind == "measurement")
    lv = np.flatnonzero(bad.kind == "lever")
    bad.loc[m[0], "step"] = 99
    bad.loc[m[1], "variable"] = "hardness"
    bad.loc[m[2], "unit"] = "in"
    bad.loc[lv[0], "value"] = 1e6
    f = _fails(bad, sim.process).set_index("row")
    assert f.loc[m[0], "column"] == "step" and "unknown step" in f.loc[m[0], "reason"]
    assert f.loc[m[1], "column"] == "variable"
    assert f.loc[m[2], "column"] == "unit" and "differs" in f.loc[m[2], "reason"]
    assert f.loc[lv[0], "reason"] == "lever value outside its hard bounds"
    assert len(f) == 4


def test_missing_and_extra_columns_and_bad_kind(data):
    _, _, df = data
    assert "batch_id" in set(_fails(df.drop(columns=["batch_id"]))["column"])
    extra = _fails(df.assign(colour="red"))
    assert list(extra["column"]) == ["colour"] and "column_in_schema" in extra["reason"][0]
    bad = df.copy()
    bad.loc[0, "kind"] = "guess"
    assert set(_fails(bad)["column"]) == {"kind"}


def test_validate_coerces_dtypes(data):
    _, _, df = data
    loose = df.astype({"batch_id": object, "step": "int32"})
    out = validate(loose)
    assert str(out["step"].dtype) == "int64" and pd.api.types.is_string_dtype(out["batch_id"])


def test_step_rules_answer_from_the_process(data):
    from simulators.schema import StepRules

    sim, _, _ = data
    p = sim.process
    rules = StepRules(p)
    steps = np.array([0, 1, p.n_steps, p.n_steps + 1])
    assert rules.known_step(steps).tolist() == [False, True, True, False]
    assert rules.step_factory(steps).tolist() == [None, p.steps[0].factory, p.steps[-1].factory, None]
    assert rules.step_partner(steps).tolist() == [None, p.steps[0].partner, p.steps[-1].partner, None]
    ch, lv = p.characteristics[0], p.levers[0]
    var = pd.array([ch.name, lv.name, "nothing", pd.NA], dtype="string")
    assert rules.is_characteristic(var).tolist() == [True, False, False, False]
    assert rules.is_lever(var).tolist() == [False, True, False, False]
    assert rules.lever_step(var).tolist() == [-1, lv.step, -1, -1]
    lo, hi = rules.lever_bounds(var)
    assert lo.tolist() == [-np.inf, lv.lower, -np.inf, -np.inf]
    assert hi.tolist() == [np.inf, lv.upper, np.inf, np.inf]
    kind = ["measurement", "lever", "measurement", "event"]
    assert rules.process_unit(kind, var).tolist() == [ch.unit, lv.unit, None, None]
    assert StepRules.needs_value(kind + [None]).tolist() == [True, True, True, False, False]


def test_check_rows_and_the_frame_check_use_the_step_rules(data, monkeypatch):
    # one rule, one place: a changed rule changes the simulator's check
    import simulators.schema as schema

    sim, _, df = data
    lv = sim.process.levers[0]
    assert not len(schema.check_rows(df, sim.process))
    monkeypatch.setattr(schema.StepRules, "lever_bounds",
                        lambda self, v: (np.full(len(v), lv.upper + 1), np.full(len(v), np.inf)))
    f = schema.check_rows(df, sim.process)
    assert set(f["reason"]) == {"lever value outside its hard bounds"}
    assert len(f) == (df.kind == "lever").sum()
