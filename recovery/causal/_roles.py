"""How a step's kind reaches characteristics: the roles it names, its primary
characteristic and what its batch-level noise shifts (as ``simulators/_kernels.py``
resolves them). Shared by the graph's building and its segment composition."""

from __future__ import annotations

from simulators.definition import Process
from simulators.kinds import KINDS


def _chars_of_role(process: Process, role: str, target: str | None) -> list[str]:
    """Characteristics a kind's role refers to at a step (as the kernel resolves them)."""
    if role == "bend_angle" and target is not None:
        return [target]
    for c in process.characteristics:
        if c.role == role and role != "other":
            return [c.name]
    return []


def _primary(process: Process, step) -> str | None:
    """The characteristic a step's batch-level noise (and factory drift) acts on."""
    spec = KINDS[step.kind]
    roles = spec.needs or spec.acts_on
    if not roles:
        return None
    chars = _chars_of_role(process, roles[0], step.target)
    return chars[0] if chars else None


#: Roles a kind's batch-level noise (and so its factory's drift) reaches besides its
#: primary characteristic: plating's noise scales the deposit, which sets the coating
#: and, through it, the diameter (``simulators/_kernels.py``, PLATING).
_NOISE_ALSO: dict[str, tuple[str, ...]] = {"plating": ("diameter",)}


def _noise_targets(process: Process, step) -> list[str]:
    """The characteristics a step's batch-level noise (and factory drift) shifts."""
    out = [c for c in [_primary(process, step)] if c is not None]
    for role in _NOISE_ALSO.get(step.kind, ()):
        out += [c for c in _chars_of_role(process, role, step.target) if c not in out]
    return out

