"""Station steps (issue 22): a step of kind `station` lists the characteristics it
produces and acts on; every mistake is named with the file and the entry."""

import pytest

from simulators.definition import ProcessDefinitionError, parse_process
from simulators.lines import make_line


def _line_text() -> str:
    return make_line(stations=2, chars_per_station=2, seed=4).process_toml()


def test_a_generated_line_parses_with_what_each_station_produces():
    p = parse_process(_line_text(), "line.toml")
    assert [s.kind for s in p.steps] == ["station", "inspection"] * 2
    assert p.step(1).produces == ("st1_m1", "st1_m2") and p.step(3).produces == ("st2_m1", "st2_m2")
    assert p.step(2).produces == () and p.step(1).acts_on == ()
    # what a station makes is structure: a plant file that makes something else differs
    q = parse_process(_line_text().replace('produces = ["st2_m1", "st2_m2"]',
                                           'produces = ["st2_m1"]\nacts_on = ["st1_m1"]')
                      .replace('measures = ["st2_m1", "st2_m2"]', 'measures = ["st2_m1", "st1_m1"]'),
                      "other.toml")
    assert q.step(3).acts_on == ("st1_m1",)
    assert "steps[2]" in p.structure_difference(q)


@pytest.mark.parametrize("old, new, message", [
    ('produces = ["st1_m1", "st1_m2"]', 'produces = ["st1_m1", "nope"]',
     "steps[0] (step 1): produces: unknown characteristic(s) ['nope']"),
    ('produces = ["st1_m1", "st1_m2"]', 'produces = ["st1_m1", "st1_m1"]',
     "steps[0] (step 1): produces: ['st1_m1'] listed twice"),
    ('produces = ["st1_m1", "st1_m2"]', 'produces = "st1_m1"',
     "steps[0] (step 1): field 'produces' must be a list of characteristic names"),
    ('produces = ["st1_m1", "st1_m2"]', 'produces = ["st1_m1", "st1_m2"]\nacts_on = ["st1_m1"]',
     "steps[0] (step 1): ['st1_m1'] both produced and acted on at this step"),
    ('produces = ["st2_m1", "st2_m2"]', 'produces = ["st2_m1", "st2_m2", "st1_m1"]',
     "steps[2] (step 3): produces 'st1_m1', which step 1 already produces"),
    ('produces = ["st1_m1", "st1_m2"]', 'produces = ["st1_m1", "st1_m2"]\nacts_on = ["st2_m1"]',
     "steps[0] (step 1): acts_on ['st2_m1'] before it is produced (step 3)"),
    ('produces = ["st1_m1", "st1_m2"]', 'produces = []',
     "steps[0] (step 1): a station step needs 'produces' or 'acts_on'"),
    ('measures = ["st1_m1", "st1_m2"]', 'measures = ["st1_m1", "st2_m1"]',
     "inspection at step 2: measures ['st2_m1'] before it is produced (step 3)"),
    ('name = "station 2 gauge"\nkind = "inspection"', 'name = "station 2 gauge"\nkind = "inspection"\n'
     'produces = ["st2_m1"]', "steps[3] (step 4): 'produces' is only for steps of kind ['station']"),
    ('name = "st1_m1"\nrole = "other"', 'name = "st1_m1"\nrole = "length"',
     "steps[0] (step 1): produces: ['st1_m1'] have a physical role (['length'])"),
])
def test_bad_station_entries_are_named(old, new, message):
    text = _line_text()
    assert old in text
    with pytest.raises(ProcessDefinitionError) as exc:
        parse_process(text.replace(old, new, 1), "line.toml")
    assert f"line.toml: {message}" in str(exc.value)
