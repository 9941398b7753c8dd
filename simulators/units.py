"""One pint unit registry for the whole toolkit.

Process files and partner mappings name units as pint strings (``mm``,
``mm/m``, ``MPa``, ``um``, ``degC``, ``A/dm^2``). Conversion always goes
through this registry, never through hand-written factors.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["registry", "parse_unit", "conversion"]


@lru_cache(maxsize=1)
def registry():
    """The shared ``pint.UnitRegistry`` (imported lazily: pint is slow to load)."""
    import pint

    ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    # Common shop-floor spellings that pint does not know out of the box.
    ureg.define("micron = micrometer = µ_m")
    return ureg


@lru_cache(maxsize=256)
def parse_unit(unit: str):
    """Parse a unit string; raises if pint does not know it."""
    ureg = registry()
    if unit in ("1", "", "dimensionless"):
        return ureg.dimensionless
    return ureg.Unit(unit)


@lru_cache(maxsize=256)
def conversion(src: str, dst: str) -> tuple[float, float]:
    """``(scale, offset)`` so that ``value_dst = value_src * scale + offset``.

    Works for offset units (degC, degF) too. Raises ``pint`` errors for
    incompatible dimensions.
    """
    ureg = registry()
    q0 = ureg.Quantity(0.0, parse_unit(src)).to(parse_unit(dst)).magnitude
    q1 = ureg.Quantity(1.0, parse_unit(src)).to(parse_unit(dst)).magnitude
    return float(q1 - q0), float(q0)
