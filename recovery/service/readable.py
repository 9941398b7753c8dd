"""The batch page's figures as an engineer would write them.

One place in Python decides how a number is shown, so the page (plain JS)
only prints what it is given and never guesses a precision:

* a probability as a percentage, ``"< 0.1%"`` for the tiny ones
  (:func:`percent`);
* a lever value rounded to the lever's resolution (:func:`lever_resolution`,
  :func:`round_to`): whole numbers for integer levers, else the largest power
  of ten at most 1% of the lever's range of change;
* the root cause in one plain sentence (:func:`root_cause_sentence`).

:func:`readable_view` adds these to the body of ``GET /api/batches/{id}``
without changing any existing field (the raw values stay for other clients).
"""

from __future__ import annotations

import copy
import math

__all__ = ["percent", "lever_resolution", "decimals", "round_to", "root_cause_sentence", "readable_view"]

#: Probabilities below this show as "< 0.1%".
TINY = 0.001


def percent(p: float | None) -> str:
    """A probability (0-1) as a percentage: ``"83%"``, ``"4.2%"``, ``"< 0.1%"``.

    Two significant digits down to 1%, one decimal below (0.1% to 1%); the
    model's probabilities carry no more than that.

    Examples
    --------
    >>> percent(0.8312), percent(0.042), percent(1.2e-17), percent(1.0)
    ('83%', '4.2%', '< 0.1%', '100%')
    """
    if p is None or not math.isfinite(p):
        return ""
    if p < TINY:
        return "< 0.1%"
    x = 100.0 * p
    if 99.5 <= x < 100.0:
        return "> 99%"          # "100%" would claim a certainty the model does not give
    if x >= 10.0:
        return f"{x:.0f}%"
    t = f"{x:.1f}%"
    return t.replace(".0%", "%") if x >= 1.0 else t


def lever_resolution(lever) -> float:
    """The step a lever's value is shown (and worth set) to, in the lever's unit.

    Integer levers (e.g. polishing passes): 1. Others: the largest power of ten
    at most 1% of the lever's range of change (``max_change``, else
    ``upper - lower``); rounding then moves a value by at most 0.5% of that
    range, below what the model resolves and what a set point holds (80 degC of
    change: 0.1 degC; 15 min: 0.1 min; 2.5 h: 0.01 h).

    Parameters
    ----------
    lever : simulators.definition.Lever
    """
    if lever.integer:
        return 1.0
    span = lever.max_change if math.isfinite(lever.max_change) and lever.max_change > 0 else lever.upper - lever.lower
    if not math.isfinite(span) or span <= 0:
        return 0.001
    return 10.0 ** math.floor(math.log10(span / 100.0))


def decimals(resolution: float) -> int:
    """Decimal places that show a multiple of ``resolution`` (0 for 1 or more)."""
    return max(0, -math.floor(math.log10(resolution) + 1e-9))


def round_to(value: float | None, resolution: float) -> float | None:
    """``value`` rounded to a multiple of ``resolution``, without binary noise."""
    if value is None or not math.isfinite(value):
        return value
    return round(round(value / resolution) * resolution, decimals(resolution))


def root_cause_sentence(causes: list[dict], process) -> str:
    """The most likely origin of the deviation, in one sentence.

    Parameters
    ----------
    causes : list of dict
        ``Recommendation.root_cause`` (``{"step", "cause", "probability", "path"}``),
        most likely first.
    process : simulators.definition.Process
    """
    if not causes:
        return "No deviation to explain."
    c = causes[0]
    faults = {f.name: f for f in process.faults}
    share = percent(c["probability"])
    if c["cause"] in faults:
        f = faults[c["cause"]]
        what = f"the fault '{c['cause'].replace('_', ' ')}' at step {c['step']}"
        why = f" ({f.description})" if f.description else ""
    else:
        what = f"a shift in {c['cause'].replace('_', ' ')} beginning at step {c['step']} that no catalogued fault explains"
        why = ""
    runner = ""
    if len(causes) > 1:
        runner = f"; next: {causes[1]['cause'].replace('_', ' ')} ({percent(causes[1]['probability'])})"
    return f"Most likely cause ({share}): {what}{why}{runner}."


def readable_view(body: dict, process) -> dict:
    """Add the readable figures to a batch view (in place; also returned).

    Adds ``resolution`` and ``decimals`` to each entry of ``body["levers"]``;
    to the recommendation, ``p_accept_text`` and ``p_accept_do_nothing_text``
    (``{"mean", "low", "high"}`` as percentages), ``display_value`` to each plan
    row (rounded to its lever's resolution), ``probability_text`` to each
    root-cause row, and ``root_cause_sentence``.
    """
    levers = {lv.name: lv for lv in process.levers}
    for row in body.get("levers", []):
        lv = levers.get(row["name"])
        if lv is not None:
            res = lever_resolution(lv)
            row.update({"resolution": res, "decimals": decimals(res)})
    if not body.get("recommendation"):
        return body
    # a copy: the plan and root-cause rows are the cached recommendation's own
    # objects, which the store and the audit trail receive as they are
    rec = body["recommendation"] = copy.deepcopy(body["recommendation"])
    for key in ("p_accept", "p_accept_do_nothing"):
        pa = rec.get(key) or {}
        rec[f"{key}_text"] = {k: percent(pa.get(k)) for k in ("mean", "low", "high")}
    for row in rec.get("plan", []):
        lv = levers.get(row["lever"])
        res = lever_resolution(lv) if lv is not None else 0.001
        row["display_value"] = round_to(row["value"], res)
        row["decimals"] = decimals(res)
    for c in rec.get("root_cause", []):
        c["probability_text"] = percent(c["probability"])
    rec["root_cause_sentence"] = root_cause_sentence(rec.get("root_cause", []), process)
    return body
