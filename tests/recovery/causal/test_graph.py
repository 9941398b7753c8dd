"""The causal graph: derived from the process definition, edited by engineers."""

import numpy as np
import pytest

from recovery.causal.graph import CausalGraph, ExpertEditError, load_edits, parse_edits
from simulators.definition import load_process


@pytest.fixture(scope="module")
def default():
    return load_process()


@pytest.fixture(scope="module")
def small():
    return load_process("small")


def sources(g, step, target):
    return sorted(e.source for e in g.parents(step, target))


def test_kinds_that_set_a_characteristic_cut_its_carry_over(default):
    g = CausalGraph.from_process(default)
    assert sources(g, 12, "yield_strength") == []            # austenitising sets strength
    assert sources(g, 13, "yield_strength") == ["yield_strength"]   # quench changes it
    assert sources(g, 9, "length") == []                     # cutting sets length
    assert "roughness" not in sources(g, 22, "roughness")    # grinding sets roughness
    assert g.parents(2, "diameter") == []                    # washing acts on nothing


def test_bending_reads_strength_and_diameter_and_its_lever(default):
    g = CausalGraph.from_process(default)
    assert sources(g, 33, "bend_angle_1") == ["diameter", "overbend_1", "yield_strength"]
    assert sources(g, 44, "bend_angle_2") == ["diameter", "overbend_2", "yield_strength"]
    # bending 1 does not touch the second bend
    assert g.parents(33, "bend_angle_2") == []


def test_segments_compose_the_steps_between_gauges(default):
    g = CausalGraph.from_process(default)
    segs = g.segments()
    assert [s.end for s in segs] == list(default.inspection_steps)
    mi = g.modeled_index
    s35 = segs[3]  # steps 26..35: plating, bake, polishing, bending 1
    row = s35.carry[mi["bend_angle_1"]]
    assert {g.modeled[i] for i in np.flatnonzero(row)} == {"diameter", "yield_strength"}
    j = default.lever_index["overbend_1"]
    assert s35.levers[mi["bend_angle_1"], j] and not s35.levers[mi["diameter"], j]
    # the temper lever at step 18 reaches strength by the inspection at 25
    assert segs[2].levers[mi["yield_strength"], default.lever_index["temper2_temperature"]]
    # nothing acts on coating between 5 and 15: it passes through unchanged
    assert not segs[1].acted[mi["coating_thickness"]]


def test_fault_signatures_carry_signs_to_the_gauge(default):
    g = CausalGraph.from_process(default)
    by_name = {}
    for s in g.segments():
        for fi, sig in zip(s.faults, s.signatures):
            by_name[default.faults[fi].name] = (s.end, sig)
    assert by_name["chrome_bath_current_drop"] == (35, {"diameter": -1, "coating_thickness": -1})
    assert by_name["furnace_over_temperature"] == (15, {"straightness": 1, "yield_strength": 1})
    assert by_name["quench_contamination"][1] == {"yield_strength": -1}
    assert by_name["misaligned_bending_die"][1] == {"bend_angle_1": 0}
    assert by_name["grinding_burn"][1] == {"residual_stress": 1, "crack": 1}


def test_expert_edits_are_applied_and_recorded(default, tmp_path):
    f = tmp_path / "edits.toml"
    f.write_text("""
[[remove_edge]]
step = 18
source = "temper2_temperature"
target = "residual_stress"
reason = "no effect on relaxation"

[[add_edge]]
step = 17
source = "yield_strength"
target = "straightness"
reason = "harder bars spring back"

[[prior]]
lever = "temper2_temperature"
target = "yield_strength"
mean = -1.2
sd = 0.6
""")
    g = CausalGraph.from_process(default, f)
    assert "temper2_temperature" not in sources(g, 18, "residual_stress")
    added = [e for e in g.parents(17, "straightness") if e.source == "yield_strength"]
    assert added and added[0].origin == "expert" and added[0].reason == "harder bars spring back"
    assert len(g.log) == 3 and "removed temper2_temperature -> residual_stress" in g.log[0]
    assert "prior on lever slope temper2_temperature -> yield_strength" in g.log[2]
    # the added edge shows in the segment: strength at 15 now reaches straightness at 25
    mi = g.modeled_index
    assert g.segments()[2].carry[mi["straightness"], mi["yield_strength"]]
    assert "yield_strength*" in g.describe()
    # round trip through the model directory format
    back = CausalGraph.from_dict(g.to_dict(), default)
    assert back.edges == g.edges and back.acts == g.acts and back.log == g.log


def test_an_added_edge_on_an_idle_step_keeps_the_carry_over(default):
    edits = parse_edits({"add_edge": [{"step": 20, "source": "yield_strength", "target": "straightness"}]})
    g = CausalGraph.from_process(default, edits)
    assert sources(g, 20, "straightness") == ["straightness", "yield_strength"]


@pytest.mark.parametrize("doc,message", [
    ({"add_edge": [{"step": 99, "source": "diameter", "target": "diameter"}]}, "step 99 is not a step"),
    ({"add_edge": [{"step": 3, "source": "colour", "target": "diameter"}]}, "unknown source 'colour'"),
    ({"add_edge": [{"step": 3, "source": "diameter", "target": "colour"}]}, "unknown target"),
    ({"remove_edge": [{"step": 3, "source": "length", "target": "diameter"}]}, "has no edge"),
    ({"add_edge": [{"step": 13, "source": "yield_strength", "target": "yield_strength"}]}, "already has"),
    ({"add_edge": [{"step": 3, "source": "plating_time", "target": "diameter"}]}, "acts at step 28"),
    ({"prior": [{"lever": "temper2_temperature", "target": "length", "mean": 1.0, "sd": 1.0}]},
     "does not reach 'length'"),
    ({"prior": [{"target": "length", "mean": 1.0, "sd": 0.0, "lever": "temper2_temperature"}]}, "sd > 0"),
    ({"prior": [{"target": "diameter", "mean": 1.0, "sd": 1.0}]}, "give either 'lever'"),
    ({"colour": []}, "unknown table"),
])
def test_bad_edits_name_the_entry(default, doc, message):
    with pytest.raises(ExpertEditError, match=message):
        CausalGraph.from_process(default, parse_edits(doc, "e.toml"))


def test_the_example_edit_file_applies_to_the_default_process(default):
    from pathlib import Path

    path = Path(__file__).parents[3] / "examples" / "expert_edits.toml"
    g = CausalGraph.from_process(default, load_edits(path))
    assert len(g.log) == len(g.edits.add) + len(g.edits.remove) + len(g.edits.priors) >= 3


def test_small_process_graph(small):
    g = CausalGraph.from_process(small)
    assert g.modeled == ("diameter", "ovality", "yield_strength", "residual_stress",
                         "coating_thickness", "roughness")
    assert g.crack == ()
    assert sources(g, 7, "yield_strength") == ["temper_temperature", "yield_strength"]


def test_plating_drift_reaches_the_diameter(default):
    """Plating's batch noise scales the deposit, which sets coating and diameter."""
    g = CausalGraph.from_process(default)
    seg = g.segments()[3]  # 25..35: hard chroming at 28 in F06
    f06 = [f.id for f in default.factories].index("F06")
    mi = g.modeled_index
    assert seg.drift[f06, mi["coating_thickness"]] and seg.drift[f06, mi["diameter"]]
