"""The ``uncertain`` format: kind defaults, per-step overrides, and named errors."""

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from simulators.definition import (ProcessDefinitionError, load_process, parse_prior,
                                   parse_process)
from simulators.kinds import KINDS

SMALL = resources.files("simulators.processes").joinpath("small.toml").read_text("utf-8")
PLANTS = Path(__file__).resolve().parents[2] / "examples" / "plants"


def _with_temper(extra: str) -> str:
    """small.toml with ``extra`` added to the temper step (step 7)."""
    old = 'name = "temper"\nkind = "temper"\nfactory = "FA2"\n'
    assert old in SMALL
    return SMALL.replace(old, old + extra + "\n")


def test_kind_defaults_never_name_a_lever_parameter_and_parse():
    for spec in KINDS.values():
        assert set(spec.uncertain) <= set(spec.params), spec.name
        assert not set(spec.uncertain) & set(spec.lever_params), spec.name
        for text in spec.uncertain.values():
            parse_prior(text)
    # the brief's families: lever sensitivities, efficiencies, activation energies, moduli
    assert {"force_scale", "stress_per_kN"} <= set(KINDS["straightening"].uncertain)
    assert "efficiency" in KINDS["plating"].uncertain
    assert "activation" in KINDS["stress_relief"].uncertain
    assert "modulus" in KINDS["bending"].uncertain


def test_small_process_resolves_the_kind_defaults_in_step_order():
    p = load_process("small")
    keys = [u.key for u in p.uncertain]
    assert keys == [(7, "drop"), (7, "temperature_scale"), (10, "efficiency"),
                    (11, "per_pass"), (11, "removal")]
    assert all(str(u.prior) == KINDS[p.step(u.step).kind].uncertain[u.param] for u in p.uncertain)
    assert p.uncertain[2].unit == "1" and p.uncertain[0].unit == "MPa"


def test_default_process_skips_parameters_at_zero():
    p = load_process()
    keys = {u.key for u in p.uncertain}
    assert (17, "force_scale") in keys and (28, "efficiency") in keys
    # no uncertain parameter is set by a lever, none is 0 in the file
    assert not keys & {(lv.step, lv.sets) for lv in p.levers}
    assert all(p.step(s).params[n] != 0.0 for s, n in keys)


def test_step_overrides_switches_off_and_adds():
    p = parse_process(_with_temper(
        'uncertain = { drop = "uniform(0.8, 1.25)", temperature_scale = false, stress_keep = "lognormal(0, 0.1)" }'))
    got = {u.key: str(u.prior) for u in p.uncertain if u.step == 7}
    assert got == {(7, "drop"): "uniform(0.8, 1.25)", (7, "stress_keep"): "lognormal(0, 0.1)"}
    off = parse_process(_with_temper("uncertain = false"))
    assert not [u for u in off.uncertain if u.step == 7]
    assert len(off.uncertain) == len(load_process("small").uncertain) - 2
    same = parse_process(_with_temper("uncertain = { drop = true }"))
    assert [u.key for u in same.uncertain] == [u.key for u in load_process("small").uncertain]
    assert same.structure_difference(load_process("small")) is None


@pytest.mark.parametrize("entry, message", [
    ('uncertain = { dropp = "lognormal(0, 0.3)" }', "unknown parameter 'dropp'"),
    ('uncertain = { drop = "gamma(2, 1)" }', "cannot parse prior 'gamma(2, 1)'"),
    ('uncertain = { drop = "lognormal(0, -1)" }', "sigma must be > 0"),
    ('uncertain = { drop = "uniform(1.2, 0.8)" }', "0 < low < high"),
    ('uncertain = { drop = "lognormal(a, 1)" }', "must be numbers"),
    ('uncertain = { temperature = "lognormal(0, 0.3)" }', "set by a lever"),
    ('uncertain = { stress_keep = true }', "has no default prior"),
    ('uncertain = { drop = 0.3 }', "must be a prior string"),
    ('uncertain = "yes"', "field 'uncertain' must be"),
])
def test_bad_uncertain_entries_name_the_step_and_entry(entry, message):
    with pytest.raises(ProcessDefinitionError) as exc:
        parse_process(_with_temper(entry), "small.toml")
    text = str(exc.value)
    assert "small.toml: steps[6] (step 7)" in text and message in text


def test_a_prior_on_a_zero_parameter_is_refused():
    text = SMALL.replace('params = { removal = 156.0 }',
                         'params = { removal = 156.0 }\nuncertain = { allowance = "lognormal(0, 0.3)" }')
    with pytest.raises(ProcessDefinitionError, match="set by a lever"):
        parse_process(text, "small.toml")
    text = SMALL.replace('params = { removal = 156.0 }',
                         'params = { removal = 156.0, burn_stress = 0.0 }\n'
                         'uncertain = { burn_stress = "lognormal(0, 0.3)" }')
    with pytest.raises(ProcessDefinitionError, match=r"step 9\).*'burn_stress' is 0 in the file"):
        parse_process(text, "small.toml")


def test_prior_draws_match_their_definition():
    rng = np.random.default_rng(0)
    ln = parse_prior(" lognormal( 0.1 , 0.2 ) ")
    z = ln.sample_log_factor(rng, 20000)
    assert abs(z.mean() - 0.1) < 0.01 and abs(z.std() - 0.2) < 0.01
    assert ln.log_factor_sd() == 0.2 and ln.log_factor_range(3.0) == pytest.approx((-0.5, 0.7))
    un = parse_prior("uniform(0.5, 2)")
    f = np.exp(un.sample_log_factor(rng, 20000))
    assert f.min() >= 0.5 and f.max() <= 2.0 and abs(f.mean() - 1.25) < 0.02
    assert un.log_factor_sd() == pytest.approx(np.log(f).std(), rel=0.03)


@pytest.mark.parametrize("plant, base", [
    ("plant_a_soft_rolls.toml", "default"), ("plant_b_hot_bath.toml", "default"),
    ("plant_c_mixed.toml", "default"), ("small_plant.toml", "small")])
def test_example_plants_have_the_structure_of_their_file_and_other_physics(plant, base):
    p, b = load_process(PLANTS / plant), load_process(base)
    assert p.structure_difference(b) is None and b.structure_difference(p) is None
    changed = [(s.index, n) for s, t in zip(p.steps, b.steps) for n in s.params
               if s.params[n] != t.params[n]]
    assert len(changed) >= 4
    for u in b.uncertain:  # every changed uncertain parameter moved by about 10-30%
        r = p.step(u.step).params[u.param] / b.step(u.step).params[u.param]
        assert r == 1.0 or 0.05 <= abs(r - 1.0) <= 0.31, (u.key, r)
