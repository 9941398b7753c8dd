"""Stations: steps that say what they produce and act on (issue 22).

A partner's line has steps whose physics the toolkit does not know: a press, a
welding cell, an assembly station with a hundred anonymised measurement
points. Such a step has kind ``station`` and lists, in the process file,

* ``produces``: the characteristics that come into being there (their value
  does not depend on anything before the step, only on what the causal graph
  says within the step), and
* ``acts_on``: characteristics produced earlier that the step changes (their
  value after the step carries the value before it, plus the step's own noise).

The causal model gives every characteristic a station produces or acts on its
own batch-level noise at that step and its own bar-to-bar spread, learned from
data (``recovery.causal.graph``). The simulator carries such characteristics at
their nominal, as it does for machining steps.

The checks here run inside :func:`simulators.definition.parse_process`; every
error names the file and the entry.
"""

from __future__ import annotations

from typing import Callable, Sequence

__all__ = ["STATION_KINDS", "station_fields", "check_production"]

#: Kinds whose steps may list ``produces`` and ``acts_on``.
STATION_KINDS: tuple[str, ...] = ("station",)


def station_fields(table: dict, kind: str, chars: dict, fail: Callable[[str], None]
                   ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Read a step's ``produces`` and ``acts_on`` lists.

    Parameters
    ----------
    table : dict
        The step's TOML table.
    kind : str
        The step's kind.
    chars : dict
        Characteristic name -> :class:`~simulators.definition.Characteristic`.
    fail : callable
        Raises the loader's error for this entry (the message gets the file and
        the entry prefixed).

    Returns
    -------
    produces, acts_on : tuple of str
    """
    out = []
    for key in ("produces", "acts_on"):
        names = table.get(key, [])
        if key in table and kind not in STATION_KINDS:
            fail(f"'{key}' is only for steps of kind {list(STATION_KINDS)}; a '{kind}' step's "
                 "effects come from its kind")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            fail(f"field '{key}' must be a list of characteristic names, got {names!r}")
        unknown = [n for n in names if n not in chars]
        if unknown:
            fail(f"{key}: unknown characteristic(s) {unknown}; known: {sorted(chars)}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            fail(f"{key}: {dup} listed twice")
        out.append(tuple(names))
    produces, acts_on = out
    both = sorted(set(produces) & set(acts_on))
    if both:
        fail(f"{both} both produced and acted on at this step; a produced characteristic is "
             "new here, list it under 'produces' only")
    physical = [n for n in produces if chars[n].role != "other"]
    if physical:
        fail(f"produces: {physical} have a physical role ({[chars[n].role for n in physical]}), "
             "which the physics kinds produce; a station produces role 'other' characteristics")
    if kind in STATION_KINDS and not (produces or acts_on):
        fail("a station step needs 'produces' or 'acts_on' (the characteristics it makes or changes)")
    return produces, acts_on


def check_production(label: str, steps: Sequence, inspections: Sequence) -> None:
    """Cross-step rules: each characteristic is produced at most once, is acted on
    and gauged only after it is produced.

    Parameters
    ----------
    label : str
        The file, for messages.
    steps : sequence of Step
    inspections : sequence of Inspection

    Raises
    ------
    ProcessDefinitionError
        Naming the step (``steps[i] (step k)``) or the inspection.
    """
    from simulators.definition import ProcessDefinitionError

    produced_at: dict[str, int] = {}
    for s in steps:
        where = f"{label}: steps[{s.index - 1}] (step {s.index})"
        for n in s.produces:
            if n in produced_at:
                raise ProcessDefinitionError(
                    f"{where}: produces '{n}', which step {produced_at[n]} already produces; a "
                    "characteristic comes into being at one step")
            produced_at[n] = s.index
    for s in steps:
        early = [n for n in s.acts_on if n in produced_at and produced_at[n] > s.index]
        if early:
            raise ProcessDefinitionError(
                f"{label}: steps[{s.index - 1}] (step {s.index}): acts_on {early} before "
                f"{'it is' if len(early) == 1 else 'they are'} produced (step "
                f"{', '.join(str(produced_at[n]) for n in early)})")
    for k, ins in enumerate(sorted(inspections, key=lambda i: i.step)):
        early = [n for n in ins.measures if n in produced_at and produced_at[n] > ins.step]
        if early:
            raise ProcessDefinitionError(
                f"{label}: inspection at step {ins.step}: measures {early} before "
                f"{'it is' if len(early) == 1 else 'they are'} produced (step "
                f"{', '.join(str(produced_at[n]) for n in early)})")
