"""Process files: the built-ins load, and every kind of bad entry is named."""

from importlib import resources

import numpy as np
import pytest

from simulators.definition import ProcessDefinitionError, load_process, parse_process
from simulators.kinds import KIND_IDS, KINDS

SMALL = resources.files("simulators.processes").joinpath("small.toml").read_text("utf-8")


def test_default_process_is_the_documented_seat_bar():
    p = load_process()
    assert (p.n_steps, len(p.partners), len(p.factories)) == (50, 5, 10)
    assert len(p.characteristics) >= 8 and len(p.levers) >= 8 and len(p.faults) >= 6
    assert p.inspection_steps == (5, 15, 25, 35, 45, 50)
    kinds = [s.kind for s in p.steps]
    # at least two bending operations, the second after plating
    bends = [s.index for s in p.steps if s.kind == "bending"]
    assert len(bends) >= 2 and bends[1] > kinds.index("plating") + 1
    # recoverable, partly recoverable and unrecoverable faults are all present
    assert {f.recoverable for f in p.faults} == {"yes", "partly", "no"}
    # each partner owns one contiguous chain of steps over its own factories
    partners = [s.partner for s in p.steps]
    assert [k for i, k in enumerate(partners) if i == 0 or partners[i - 1] != k] == ["P1", "P2", "P3", "P4", "P5"]
    assert all(lv.integer for lv in p.levers if lv.sets == "extra_passes")


def test_small_process_loads_and_has_twelve_steps():
    p = load_process("small")
    assert p.n_steps == 12 and p.bars_per_batch == 20


def test_lever_limits_combine_bounds_and_max_change():
    p = load_process()
    lv = p.lever("temper2_temperature")
    assert (lv.low, lv.high) == (300.0, 500.0)  # upper bound 510 is cut by max_change 100
    lo, hi = p.lever_bounds()
    assert p.within_bounds(p.nominal_plan())
    plan = p.nominal_plan()
    plan[p.lever_index["temper2_temperature"]] = 505.0
    assert not p.within_bounds(plan)
    plan = p.nominal_plan()
    plan[p.lever_index["refinish_passes"]] = 1.5  # integer lever
    assert not p.within_bounds(plan)


def test_lever_cost_counts_uses_and_units():
    p = load_process()
    plan = p.nominal_plan()
    assert p.lever_cost(plan) == 0.0
    plan[p.lever_index["rechrome_time"]] = 10.0      # 150 per use + 10 per minute
    plan[p.lever_index["refinish_passes"]] = 2.0     # 60 per pass
    assert p.lever_cost(plan) == pytest.approx(150 + 100 + 120)


def test_units_known_without_pint_do_parse_with_pint_and_cover_the_built_ins():
    # reading a process of only these units skips pint; each must be one pint knows
    from simulators._process_file import KNOWN_UNITS
    from simulators.units import parse_unit

    for unit in KNOWN_UNITS:
        parse_unit(unit)
    for name in ("small", "default"):
        p = load_process(name)
        assert {c.unit for c in p.characteristics} | {lv.unit for lv in p.levers} <= KNOWN_UNITS


def _mutate(old: str, new: str, text: str = SMALL) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize("old,new,message", [
    ('kind = "quench"', 'kind = "quenchh"', "small.toml: steps[4] (step 5): unknown kind 'quenchh'"),
    ('factory = "FB1"\nparams = { removal = 156.0 }', 'factory = "FB9"\nparams = { removal = 156.0 }',
     "steps[8] (step 9): unknown factory 'FB9'"),
    ("params = { removal = 156.0 }", "params = { removall = 156.0 }",
     "steps[8] (step 9): unknown parameter(s) ['removall'] for kind 'grinding'"),
    ('name = "grinding_allowance"\nstep = 9', 'name = "grinding_allowance"\nstep = 8',
     "levers[1]: step 8 is a 'transport' step, whose lever parameters are []"),
    ('unit = "MPa"', 'unit = "megaparsnips"', "characteristics[2]: unit 'megaparsnips' is not a unit pint understands"),
    ("gates = [ { step = 6, lower = 1095.0", "gates = [ { step = 7, lower = 1095.0",
     "characteristics[2].gates[0]: gate at step 7, which is not an inspection"),
    ('step = 6\nmeasures = ["diameter", "yield_strength", "residual_stress"]',
     'step = 6\nmeasures = ["diameter", "hardness"]', "inspections[1]: unknown characteristic(s) ['hardness']"),
    ("rate = 0.08\nlow = 0.03", "rate = 1.5\nlow = 0.03", "faults[0]: need 0 <= rate <= 1"),
    ('step = 4\nrate = 0.08\nlow = 40.0\nhigh = 80.0\nunit = "K"', 'step = 4\nrate = 0.08\nlow = 40.0\nhigh = 80.0\nunit = "degC"',
     "faults[1]: a 'heat_treatment' fault (over_temperature) is in 'K', not 'degC'"),
    ("acceptance_level = 0.9", "acceptance_level = 1.9", "[process]: acceptance_level must be in (0, 1]"),
    ("bars_per_batch = 20", 'bars_per_batch = "twenty"', "[process]: field 'bars_per_batch' must be int"),
    ('nominal = 450.0\nlower = 350.0', 'nominal = 450.0\nlower = 460.0', "levers[0]: need lower <= nominal <= upper"),
    ("step = 12\nname = \"final inspection\"", "step = 13\nname = \"final inspection\"",
     "steps[11] (step 13): steps must be numbered 1, 2, 3, ... in order; expected 12"),
])
def test_bad_entries_are_named(old, new, message):
    with pytest.raises(ProcessDefinitionError) as err:
        parse_process(_mutate(old, new), "small.toml")
    assert message in str(err.value)


def test_partner_must_own_a_contiguous_chain():
    # give step 9 (partner B's factory FB1) back to partner A's factory FA2 after B started
    text = _mutate('name = "transport to surface partner"\nkind = "transport"\nfactory = "FB1"',
                   'name = "transport to surface partner"\nkind = "transport"\nfactory = "FB1"')
    text = _mutate('name = "hard chroming"\nkind = "plating"\nfactory = "FB1"',
                   'name = "hard chroming"\nkind = "plating"\nfactory = "FA2"', text)
    with pytest.raises(ProcessDefinitionError, match="partner 'A' already handed the batch on"):
        parse_process(text, "small.toml")


def test_bending_needs_a_bend_angle_target():
    text = load_process().source  # the label only
    raw = resources.files("simulators.processes").joinpath("default.toml").read_text("utf-8")
    bad = raw.replace('target = "bend_angle_1"', 'target = "diameter"', 1)
    with pytest.raises(ProcessDefinitionError, match=r"steps\[32\] \(step 33\): kind 'bending' needs 'target'"):
        parse_process(bad, text)


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ProcessDefinitionError, match="x.toml: not valid TOML"):
        parse_process("[process\nname=", "x.toml")
    with pytest.raises(ProcessDefinitionError, match="no such process file"):
        load_process(tmp_path / "nope.toml")
    f = tmp_path / "latin.toml"
    f.write_bytes("name = 'M\xfcller'".encode("latin-1"))
    with pytest.raises(ProcessDefinitionError, match="latin.toml: cannot read"):
        load_process(f)


def test_unknown_top_level_fields_are_refused():
    with pytest.raises(ProcessDefinitionError, match=r"\[process\]: unknown field\(s\) \['colour'\]"):
        parse_process(_mutate('[process]\n', '[process]\ncolour = "red"\n'), "small.toml")


def test_compiled_arrays_follow_the_definition():
    p = load_process()
    a = p.arrays
    lv = p.lever("temper2_temperature")
    assert a.params[lv.step - 1, KINDS["temper"].index("temperature")] == lv.nominal
    assert a.lever_count.sum() == len(p.levers)
    assert np.all(a.insp_of_step[[s - 1 for s in p.inspection_steps]] == np.arange(6))


def test_with_params_changes_physics_not_structure():
    import numpy as np
    from simulators.definition import ProcessDefinitionError, load_process
    from simulators.process import Simulator

    p = load_process("small")
    quench = next(s for s in p.steps if s.kind == "quench")
    q = p.with_params({(quench.index, "gain"): 350.0})
    assert p.structure_difference(q) is None
    assert p.step(quench.index).params["gain"] == 450.0   # the original is untouched
    assert q.arrays.params[quench.index - 1, 2] == 350.0
    # 100 MPa less martensite gain shows in the simulated yield strength, same noise.
    ys = p.char_index[next(c.name for c in p.characteristics if c.role == "yield_strength")]
    a = Simulator(p).simulate(50, seed=3, faults=False, record_latent=True).latent[:, quench.index, ys]
    b = Simulator(q).simulate(50, seed=3, faults=False, record_latent=True).latent[:, quench.index, ys]
    assert np.allclose(a - b, 100.0, atol=1e-6)
    with pytest.raises(ProcessDefinitionError, match="no parameter 'gian'"):
        p.with_params({(quench.index, "gian"): 1.0})
    lever = p.levers[0]
    with pytest.raises(ProcessDefinitionError, match="set by a lever"):
        p.with_params({(lever.step, lever.sets): 1.0})


def test_structure_difference_names_the_first_difference():
    from simulators.definition import load_process, parse_process
    from importlib import resources

    text = resources.files("simulators.processes").joinpath("small.toml").read_text("utf-8")
    p = parse_process(text, "small.toml")
    assert p.structure_difference(parse_process(text.replace("gain", "gain"), "copy.toml")) is None
    assert "bars_per_batch" in p.structure_difference(load_process("default"))


def test_free_levers_are_those_after_the_step():
    p = load_process()
    steps = np.array([lv.step for lv in p.levers])
    for k in range(p.n_steps + 1):
        mask = p.free_levers(k)
        assert mask.dtype == bool and mask.shape == (len(p.levers),)
        np.testing.assert_array_equal(mask, steps > k)
        assert [lv.name for lv in p.levers_after(k)] == [lv.name for lv, m in zip(p.levers, mask) if m]
    assert p.free_levers(0).all() and not p.free_levers(p.n_steps).any()


def test_acceptance_rule_and_its_count_in_bars_agree():
    p = load_process()
    n = p.bars_per_batch
    counts = np.arange(n + 1)
    accepted = p.accepts(counts / n)
    # exactly the counts from bars_needed upwards
    np.testing.assert_array_equal(accepted, counts >= p.bars_needed)
    assert 0 < p.bars_needed <= n
    assert bool(p.accepts(p.acceptance_level)) and not bool(p.accepts(p.acceptance_level - 1e-6))


def test_gate_flags_any_gauged_mean_outside_its_band():
    p = load_process()
    ins = next(i for i in p.inspections if np.isfinite(p.gate_bands(i.step)[0]).any())
    lo, hi = p.gate_bands(ins.step)
    gated = np.flatnonzero(np.isfinite(lo))
    inside = np.where(np.isfinite(lo), (lo + hi) / 2, np.nan)
    means = np.tile(inside, (3, 1))
    means[1, gated[0]] = hi[gated[0]] + 1e-6 * max(abs(hi[gated[0]]), 1.0)
    means[2, gated[-1]] = lo[gated[-1]] - 1e-6 * max(abs(lo[gated[-1]]), 1.0)
    np.testing.assert_array_equal(p.gate_flags(ins.step, means), [False, True, True])
    # not gauged (NaN) never flags, whatever the band
    assert not p.gate_flags(ins.step, np.full(p.n_chars, np.nan))
    # per characteristic: exactly the one moved out, and flags are "any of these"
    out = p.gate_outside(ins.step, means)
    assert out.shape == means.shape
    assert np.flatnonzero(out[1]).tolist() == [gated[0]] and np.flatnonzero(out[2]).tolist() == [gated[-1]]
    np.testing.assert_array_equal(out.any(axis=-1), p.gate_flags(ins.step, means))


def test_definition_is_one_import_path_for_its_modules():
    """The split modules' public names are reachable, and named, as ``simulators.definition``'s."""
    import pickle

    import simulators.definition as d

    for name in d.__all__:
        obj = getattr(d, name)
        if callable(obj):
            assert obj.__module__ == "simulators.definition", name
    p = load_process("small")
    assert pickle.loads(pickle.dumps(p.economics)) == p.economics
    assert repr(p.levers[0]).startswith("Lever(")
    # the array form names the step kind's id, not the kind
    assert p.arrays.kind_id.tolist() == [KIND_IDS[s.kind] for s in p.steps]


def test_measurement_and_station_costs_are_read_and_checked():
    p = parse_process(SMALL, "small.toml")
    assert (p.economics.measurement_cost, p.economics.station_cost) == (2.0, 30.0)
    bare = parse_process(_mutate("measurement_cost = 2.0", "# no measurement cost"), "small.toml")
    assert bare.economics.measurement_cost == 0.0
    with pytest.raises(ProcessDefinitionError, match=r"small.toml: \[economics\]: .*station_cost must be >= 0"):
        parse_process(_mutate("station_cost = 30.0", "station_cost = -1.0"), "small.toml")
