"""The candidates file, the default set, and writing a change into the process file."""

from importlib import resources

import numpy as np
import pytest

from recovery.voi.candidates import (Candidate, CandidateError, apply_change, changed_inspections,
                                     default_candidates, parse_candidates)
from simulators.definition import load_process, parse_process


@pytest.fixture(scope="module")
def small():
    return load_process("small"), resources.files("simulators.processes").joinpath("small.toml").read_text("utf-8")


@pytest.fixture(scope="module")
def default():
    return load_process("default"), resources.files("simulators.processes").joinpath("default.toml").read_text("utf-8")


GOOD = """
[[candidates]]
change = "add_characteristic"
step = 3
characteristic = "yield_strength"

[[candidates]]
change = "raise_sample"
step = 6
sample = 10
investment = 5000
"""


def test_parse_reads_every_field(small):
    p, _ = small
    a, b = parse_candidates(GOOD, p, "c.toml")
    assert (a.change, a.step, a.characteristics, a.sample) == ("add_characteristic", 3, ("yield_strength",), 4)
    assert (b.change, b.step, b.characteristics, b.sample, b.investment) == ("raise_sample", 6, (), 10, 5000.0)
    assert a.entry == "c.toml: candidates[0]"


@pytest.mark.parametrize("entry, message", [
    ('change = "add_characteristic"\nstep = 4\ncharacteristic = "diameter"',
     "candidates[1]: step 4 is not an inspection"),
    ('change = "add_characteristic"\nstep = 99\ncharacteristic = "diameter"',
     "candidates[1]: unknown step 99"),
    ('change = "add_characteristic"\nstep = 3\ncharacteristic = "hardness"',
     "candidates[1]: characteristic 'hardness' is not defined"),
    ('change = "add_characteristic"\nstep = 3\ncharacteristic = "diameter"',
     "candidates[1]: step 3 already gauges 'diameter'"),
    ('change = "raise_sample"\nstep = 3\nsample = 21', "candidates[1]: sample 21 is not in 1..20"),
    ('change = "raise_sample"\nstep = 3\nsample = 4', "candidates[1]: sample 4 is not larger than today's 4"),
    ('change = "add_inspection"\nstep = 8\nmeasures = ["diameter"]\nsample = 4',
     "candidates[1]: step 8 is a 'transport' step"),
    ('change = "add_inspection"\nstep = 8\nmeasures = ["diameter", "hardness"]\nsample = 4',
     "candidates[1]: characteristic 'hardness' is not defined"),
    ('change = "add_inspection"\nstep = 60\nmeasures = ["diameter"]\nsample = 4',
     "candidates[1]: unknown step 60; the process has steps 1..12"),
    ('change = "raise_sample"\nstep = 0\nsample = 8', "candidates[1]: unknown step 0"),
    ('change = "raise_sample"\nstep = "6"\nsample = 8', "candidates[1]: 'step' must be an integer"),
    ('change = "add_characteristic"\nstep = 3\ncharacteristic = "roughness"\nsample = 25',
     "candidates[1]: sample 25 is not in 1..20"),
    ('change = "move"\nstep = 3', "candidates[1]: 'change' must be one of"),
    ('change = "raise_sample"\nstep = 3\nsample = 8\nprice = 3', "candidates[1]: unknown field(s) ['price']"),
])
def test_errors_name_the_entry(small, entry, message):
    p, _ = small
    text = GOOD.split("[[candidates]]")[1]
    with pytest.raises(CandidateError) as exc:
        parse_candidates("[[candidates]]" + text + "\n[[candidates]]\n" + entry + "\n", p, "c.toml")
    assert str(exc.value).startswith("c.toml: ") and message in str(exc.value)


def test_not_toml_and_empty_are_errors(small):
    p, _ = small
    with pytest.raises(CandidateError, match="c.toml: not valid TOML"):
        parse_candidates("[[candidates]\n", p, "c.toml")
    with pytest.raises(CandidateError, match="c.toml: no \\[\\[candidates\\]\\] entries"):
        parse_candidates("", p, "c.toml")


def test_default_set_on_the_default_process(default):
    p, _ = default
    cs = default_candidates(p)
    kinds = {c.change for c in cs}
    assert kinds == {"add_characteristic", "raise_sample", "add_inspection"}
    # nothing at the last inspection: a reading there changes no decision
    assert all(c.step < p.n_steps for c in cs)
    ins = {i.step: i for i in p.inspections}
    for c in cs:
        if c.change == "add_characteristic":
            assert c.characteristics[0] not in ins[c.step].measures
        if c.change == "add_inspection":
            assert p.steps[c.step - 1].kind == "washing"
    # the washing step 20 follows the levers at steps 17-19, before the inspection at 25
    assert any(c.change == "add_inspection" and c.step == 20 for c in cs)


@pytest.mark.parametrize("cand, gates", [
    (Candidate("add_characteristic", 15, ("coating_thickness",), 5), {"coating_thickness": (-0.5, 0.5)}),
    (Candidate("raise_sample", 25, (), 10), {}),
    (Candidate("add_inspection", 20, ("straightness", "yield_strength"), 6),
     {"straightness": (0.0, 0.4), "yield_strength": (900.0, 1000.0)}),
])
def test_apply_change_writes_a_valid_file_with_the_change(default, cand, gates):
    p, text = default
    new = parse_process(apply_change(text, cand, gates), "changed.toml")
    want = changed_inspections(p, cand)
    assert [(i.step, tuple(i.measures), i.sample) for i in new.inspections] == want
    for name, (lo, hi) in gates.items():
        glo, ghi = new.gate_bands(cand.step)
        c = new.char_index[name]
        assert (glo[c], ghi[c]) == (lo, hi)
    # everything else is as it was: levers, faults, steps (but the new station), economics
    assert [(lv.name, lv.step) for lv in new.levers] == [(lv.name, lv.step) for lv in p.levers]
    assert [(f.name, f.step, f.rate) for f in new.faults] == [(f.name, f.step, f.rate) for f in p.faults]
    kinds = [s.kind for s in new.steps]
    old = [s.kind for s in p.steps]
    if cand.change == "add_inspection":
        old[cand.step - 1] = "inspection"
    assert kinds == old
    assert new.economics == p.economics
    assert np.array_equal(new.arrays.params, p.arrays.params)


def test_apply_change_keeps_an_existing_gate(default):
    p, text = default
    # diameter already has a gate at step 15: adding one there must not override the file's
    cand = Candidate("raise_sample", 15, (), 10)
    new = parse_process(apply_change(text, cand, {"diameter": (0.0, 1.0)}), "changed.toml")
    assert new.gate_bands(15)[0][new.char_index["diameter"]] == p.gate_bands(15)[0][p.char_index["diameter"]]
