"""Candidate changes to a process's inspection plan, and writing them into the file.

Three kinds of change (``Candidate.change``):

``add_characteristic``
    gauge one more characteristic at an existing inspection (same sample);
``raise_sample``
    gauge more bars at an existing inspection;
``add_inspection``
    turn a washing step into an inspection that gauges given characteristics on a
    sample of bars. A washing station changes nothing in the physics, exactly like
    an inspection (both draw no noise, ``simulators.kinds``), so an inline gauge
    there keeps the step numbering, the levers and the faults of the file: a new
    station where the bars pass anyway.

A new gauged mean needs a gate to flag anything; :func:`apply_change` takes the
gates to write (``plant.healthy_gates`` derives them from healthy batches).

Candidates come from a small TOML file (:func:`load_candidates`, format in
``docs/value-of-information.md``) or from :func:`default_candidates`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from simulators.definition import Process

__all__ = ["Candidate", "CandidateError", "CHANGES", "load_candidates", "parse_candidates",
           "default_candidates", "check_candidate", "apply_change", "changed_inspections"]

CHANGES = ("add_characteristic", "raise_sample", "add_inspection")


class CandidateError(ValueError):
    """A candidate is malformed or does not fit the process; the message names the entry."""


@dataclass(frozen=True)
class Candidate:
    """One change to the inspection plan.

    Attributes
    ----------
    change : str
        One of ``CHANGES``.
    step : int
        The inspection step changed, or the washing step turned into an inspection.
    characteristics : tuple of str
        What is added (``add_characteristic``: one name; ``add_inspection``: what the
        new station gauges; ``raise_sample``: empty).
    sample : int
        Bars gauged per batch at ``step`` after the change.
    entry : str
        Where the candidate came from, for messages (``"candidates[2]"`` or ``"default"``).
    investment : float
        One-off price of the gauge or station, in currency (default 0); the payback
        is counted against it.
    """

    change: str
    step: int
    characteristics: tuple[str, ...]
    sample: int
    entry: str = "candidate"
    investment: float = 0.0

    @property
    def label(self) -> str:
        """A short human description, e.g. ``"add yield_strength at step 5"``."""
        chars = ", ".join(self.characteristics)
        if self.change == "add_characteristic":
            return f"add {chars} at step {self.step}"
        if self.change == "raise_sample":
            return f"sample {self.sample} at step {self.step}"
        return f"new inspection at step {self.step}: {chars} (sample {self.sample})"

    def to_json(self) -> dict:
        return {"change": self.change, "step": self.step,
                "characteristic": ",".join(self.characteristics) or None, "sample": self.sample}


def check_candidate(process: Process, c: Candidate) -> Candidate:
    """Validate a candidate against a process; return it unchanged.

    Raises
    ------
    CandidateError
        Naming ``c.entry``: an unknown change or step, a step that is not an
        inspection (or, for a new inspection, not a washing step), an undefined or
        already gauged characteristic, a sample larger than the batch or not larger
        than today's.
    """
    where = f"{c.entry}"
    if c.change not in CHANGES:
        raise CandidateError(f"{where}: unknown change '{c.change}'; known: {', '.join(CHANGES)}")
    if not 1 <= c.step <= process.n_steps:
        raise CandidateError(f"{where}: unknown step {c.step}; the process has steps 1..{process.n_steps}")
    for name in c.characteristics:
        if name not in process.char_index:
            raise CandidateError(f"{where}: characteristic '{name}' is not defined; known: "
                                 f"{', '.join(ch.name for ch in process.characteristics)}")
    if not 1 <= c.sample <= process.bars_per_batch:
        raise CandidateError(f"{where}: sample {c.sample} is not in 1..{process.bars_per_batch} "
                             f"(bars per batch)")
    ins = {i.step: i for i in process.inspections}
    if c.change in ("add_characteristic", "raise_sample"):
        if c.step not in ins:
            raise CandidateError(f"{where}: step {c.step} is not an inspection; inspections: "
                                 f"{', '.join(map(str, sorted(ins)))}")
        cur = ins[c.step]
        if c.change == "add_characteristic":
            if len(c.characteristics) != 1:
                raise CandidateError(f"{where}: add_characteristic takes one characteristic")
            if c.characteristics[0] in cur.measures:
                raise CandidateError(f"{where}: step {c.step} already gauges '{c.characteristics[0]}'")
            if c.sample != cur.sample:
                raise CandidateError(f"{where}: add_characteristic keeps the sample ({cur.sample}); "
                                     f"use raise_sample for more bars")
        elif c.sample <= cur.sample:
            raise CandidateError(f"{where}: sample {c.sample} is not larger than today's {cur.sample} "
                                 f"at step {c.step}")
    else:
        kind = process.steps[c.step - 1].kind
        if kind != "washing":
            raise CandidateError(f"{where}: step {c.step} is a '{kind}' step; a new inspection goes on "
                                 f"a washing step (it changes nothing in the physics, like a gauge)")
        if not c.characteristics:
            raise CandidateError(f"{where}: a new inspection needs 'measures'")
        if len(set(c.characteristics)) != len(c.characteristics):
            raise CandidateError(f"{where}: a characteristic appears twice in 'measures'")
    return c


def parse_candidates(text: str, process: Process, label: str = "<string>") -> list[Candidate]:
    """Candidates from TOML text (format: ``docs/value-of-information.md``).

    Raises
    ------
    CandidateError
        Naming the file and the entry (``candidates[i]``).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CandidateError(f"{label}: not valid TOML: {exc}") from None
    extra = set(doc) - {"candidates"}
    if extra:
        raise CandidateError(f"{label}: unknown section(s) {sorted(extra)}; expected [[candidates]]")
    rows = doc.get("candidates")
    if not isinstance(rows, list) or not rows:
        raise CandidateError(f"{label}: no [[candidates]] entries")
    out = []
    ins = {i.step: i for i in process.inspections}
    for k, r in enumerate(rows):
        where = f"{label}: candidates[{k}]"
        if not isinstance(r, dict):
            raise CandidateError(f"{where}: not a table")
        unknown = set(r) - {"change", "step", "characteristic", "measures", "sample", "investment"}
        if unknown:
            raise CandidateError(f"{where}: unknown field(s) {sorted(unknown)}")
        change = r.get("change")
        if change not in CHANGES:
            raise CandidateError(f"{where}: 'change' must be one of {', '.join(CHANGES)}, got {change!r}")
        step = r.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise CandidateError(f"{where}: 'step' must be an integer, got {step!r}")
        cur = ins.get(step)
        if change == "add_characteristic":
            name = r.get("characteristic")
            if not isinstance(name, str):
                raise CandidateError(f"{where}: add_characteristic needs 'characteristic' (a name)")
            chars = (name,)
            sample = r.get("sample", cur.sample if cur else 1)
        elif change == "raise_sample":
            chars = ()
            sample = r.get("sample")
        else:
            m = r.get("measures")
            if not isinstance(m, list) or not all(isinstance(x, str) for x in m):
                raise CandidateError(f"{where}: add_inspection needs 'measures' (a list of names)")
            chars = tuple(m)
            sample = r.get("sample")
        if not isinstance(sample, int) or isinstance(sample, bool):
            raise CandidateError(f"{where}: 'sample' must be an integer, got {sample!r}")
        inv = r.get("investment", 0.0)
        if not isinstance(inv, (int, float)) or isinstance(inv, bool) or inv < 0:
            raise CandidateError(f"{where}: 'investment' must be a number >= 0, got {inv!r}")
        out.append(check_candidate(process, Candidate(change, step, chars, sample, entry=where,
                                                      investment=float(inv))))
    return out


def load_candidates(path: str | Path, process: Process) -> list[Candidate]:
    """:func:`parse_candidates` on a file."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CandidateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_candidates(text, process, path.name)


def default_candidates(process: Process) -> list[Candidate]:
    """The documented default set.

    * every characteristic not yet gauged at each inspection before the last step
      (a reading at the last step can no longer change a decision);
    * twice the sample (at most the batch) at each inspection before the last step;
    * a new inspection on the first washing step after each lever step that is not
      followed by an inspection before it, gauging what the next inspection gauges,
      on that inspection's sample.
    """
    out = []
    last = process.n_steps
    for ins in process.inspections:
        if ins.step >= last:
            continue
        for ch in process.characteristics:
            if ch.name not in ins.measures:
                out.append(Candidate("add_characteristic", ins.step, (ch.name,), ins.sample, "default"))
        if ins.sample < process.bars_per_batch:
            out.append(Candidate("raise_sample", ins.step, (), min(2 * ins.sample, process.bars_per_batch),
                                 "default"))
    insp_steps = sorted(i.step for i in process.inspections)
    seen = set()
    for s in sorted({lv.step for lv in process.levers}):
        nxt = next((t for t in insp_steps if t > s), None)
        if nxt is None or nxt == s + 1:
            continue
        wash = next((t for t in range(s + 1, nxt) if process.steps[t - 1].kind == "washing"), None)
        if wash is None or wash in seen:
            continue
        seen.add(wash)
        nxt_ins = next(i for i in process.inspections if i.step == nxt)
        out.append(Candidate("add_inspection", wash, tuple(nxt_ins.measures), nxt_ins.sample, "default"))
    return [check_candidate(process, c) for c in out]


def changed_inspections(process: Process, c: Candidate) -> list[tuple[int, tuple[str, ...], int]]:
    """The inspection plan after the change: ``[(step, measures, sample)]`` in step order."""
    plan = [(i.step, tuple(i.measures), i.sample) for i in process.inspections]
    if c.change == "add_inspection":
        plan.append((c.step, c.characteristics, c.sample))
        return sorted(plan)
    out = []
    for step, meas, n in plan:
        if step == c.step:
            meas = meas + c.characteristics if c.change == "add_characteristic" else meas
            n = c.sample
        out.append((step, meas, n))
    return out


# ---- writing the change into the file's text ------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z_]+)\s*\]\]?\s*(#.*)?$", re.M)


def _blocks(text: str, table: str) -> list[tuple[int, int]]:
    """(start, end) character spans of every ``[[table]]`` block, header included."""
    heads = [(m.start(), m.group(1)) for m in _HEADER.finditer(text)]
    spans = []
    for k, (pos, name) in enumerate(heads):
        if name == table:
            end = heads[k + 1][0] if k + 1 < len(heads) else len(text)
            spans.append((pos, end))
    return spans


def _field_int(block: str, name: str) -> int | None:
    m = re.search(rf"^\s*{name}\s*=\s*(\d+)", block, re.M)
    return int(m.group(1)) if m else None


def _field_str(block: str, name: str) -> str | None:
    m = re.search(rf"^\s*{name}\s*=\s*\"([^\"]*)\"", block, re.M)
    return m.group(1) if m else None


def _body_end(block: str) -> int:
    """Where new lines go in a block: after its last non-blank, non-comment line."""
    lines = block.splitlines(keepends=True)
    pos, end = 0, 0
    for ln in lines:
        pos += len(ln)
        if ln.strip() and not ln.strip().startswith("#"):
            end = pos
    return end


def _fmt(x: float) -> str:
    return repr(float(round(x, 6)))


def apply_change(process_text: str, c: Candidate, gates: dict[str, tuple[float, float]] | None = None) -> str:
    """The process file's text with the change made (comments and layout kept).

    Parameters
    ----------
    process_text : str
        A process file (TOML) that the candidate was checked against.
    c : Candidate
    gates : dict, optional
        ``{characteristic: (lower, upper)}`` gates to add at ``c.step`` for what the
        change newly gauges there (a characteristic that already has a gate at that
        step keeps it). Without a gate a new reading informs decisions but flags nothing.

    Returns
    -------
    str
        The changed text; load it with ``simulators.definition.parse_process`` to check it.

    Raises
    ------
    CandidateError
        If the text lacks the inspection or step the change needs.
    """
    text = process_text
    if c.change == "add_inspection":
        text = _set_kind(text, c.step, "inspection", c)
        block = (f"[[inspections]]\nstep = {c.step}\nmeasures = [{', '.join(repr_str(m) for m in c.characteristics)}]\n"
                 f"sample = {c.sample}\n")
        spans = _blocks(text, "inspections")
        after = [s for s in spans if (_field_int(text[s[0]:s[1]], "step") or 0) < c.step]
        if after:  # keep the inspections in step order
            a, b = after[-1]
            at = a + _body_end(text[a:b])
            text = text[:at] + ("" if text[:at].endswith("\n") else "\n") + block + text[at:]
        elif spans:
            at = spans[0][0]
            text = text[:at] + block + text[at:]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    else:
        span = next((s for s in _blocks(text, "inspections") if _field_int(text[s[0]:s[1]], "step") == c.step),
                    None)
        if span is None:
            raise CandidateError(f"{c.entry}: the file has no [[inspections]] entry at step {c.step}")
        a, b = span
        block = text[a:b]
        if c.change == "raise_sample":
            block, n = re.subn(r"^(\s*sample\s*=\s*)\d+", rf"\g<1>{c.sample}", block, count=1, flags=re.M)
            if not n:
                raise CandidateError(f"{c.entry}: the inspection at step {c.step} has no 'sample' line")
        else:
            m = re.search(r"^(\s*measures\s*=\s*\[)(.*?)(\])", block, re.M | re.S)
            if m is None:
                raise CandidateError(f"{c.entry}: the inspection at step {c.step} has no 'measures' list")
            inner = m.group(2).rstrip()
            sep = ", " if inner.strip() else ""
            block = (block[:m.start(2)] + inner + sep + repr_str(c.characteristics[0]) + block[m.end(2):])
        text = text[:a] + block + text[b:]
    for name, (lo, hi) in (gates or {}).items():
        text = _add_gate(text, name, c.step, lo, hi, c)
    return text


def repr_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _set_kind(text: str, step: int, kind: str, c: Candidate) -> str:
    for a, b in _blocks(text, "steps"):
        block = text[a:b]
        if _field_int(block, "step") == step:
            if _field_str(block, "kind") != "washing":
                raise CandidateError(f"{c.entry}: step {step} is not a washing step in the file")
            block = re.sub(r'^(\s*kind\s*=\s*)"washing"', rf'\g<1>"{kind}"', block, count=1, flags=re.M)
            return text[:a] + block + text[b:]
    raise CandidateError(f"{c.entry}: the file has no [[steps]] entry for step {step}")


def _add_gate(text: str, name: str, step: int, lo: float, hi: float, c: Candidate) -> str:
    span = next((s for s in _blocks(text, "characteristics") if _field_str(text[s[0]:s[1]], "name") == name), None)
    if span is None:
        raise CandidateError(f"{c.entry}: the file has no [[characteristics]] entry '{name}'")
    a, b = span
    block = text[a:b]
    gate = f"{{ step = {step}, lower = {_fmt(lo)}, upper = {_fmt(hi)} }}"
    m = re.search(r"^(\s*gates\s*=\s*\[)(.*?)(\]\s*(#.*)?$)", block, re.M | re.S)
    if m is None:
        at = _body_end(block)
        block = block[:at] + ("" if block[:at].endswith("\n") else "\n") + f"gates = [ {gate} ]\n" + block[at:]
    else:
        if re.search(rf"step\s*=\s*{step}\b", m.group(2)):
            return text  # a gate at this step already exists: keep the file's
        inner = m.group(2).rstrip()
        sep = ",\n          " if inner.strip() else " "
        block = block[:m.start(2)] + inner + sep + gate + " " + block[m.end(2):]
    return text[:a] + block + text[b:]
