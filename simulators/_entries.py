"""The entries of a process file as frozen, typed dataclasses (private; import
them from :mod:`simulators.definition`).

One dataclass per kind of entry (characteristics and their gates, partners,
factories, steps, levers, inspections, faults, economics), the priors of the
uncertain physics (:class:`Prior`, :func:`parse_prior`, :class:`UncertainParam`)
and the error every reading problem raises. Nothing here reads a file or
knows the whole process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = ["ProcessDefinitionError", "Characteristic", "Gate", "Partner", "Factory", "Step", "Lever",
           "Inspection", "Fault", "Prior", "parse_prior", "UncertainParam", "Economics"]


class ProcessDefinitionError(ValueError):
    """A process file is malformed; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Characteristic:
    """A quality characteristic of a bar.

    Attributes
    ----------
    name : str
        Variable name in step data.
    unit : str
        SI unit (pint syntax), e.g. ``mm``, ``MPa``, ``um``.
    role : str
        What the physics treats it as (see ``simulators.kinds.ROLES``).
    nominal : float
        Target value at the end of the process, in ``unit``.
    lower, upper : float
        Final tolerance band, in ``unit``.
    gauge_sigma : float
        Standard deviation of the gauge's error, in ``unit``.
    description : str
        Free text.
    """

    name: str
    unit: str
    role: str
    nominal: float
    lower: float
    upper: float
    gauge_sigma: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class Gate:
    """An intermediate acceptance band: a batch whose sample mean of
    ``characteristic`` at inspection ``step`` falls outside is flagged."""

    step: int
    characteristic: str
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class Partner:
    """A just-in-time partner. ``offset`` shifts every step it runs, in units
    of the step's batch-level sigma."""

    id: str
    name: str
    offset: float = 0.0


@dataclass(frozen=True, slots=True)
class Factory:
    """A factory of a partner. ``drift`` is the shift of every step run there
    per 100 days of production, in units of the step's batch-level sigma."""

    id: str
    partner: str
    name: str = ""
    drift: float = 0.0


@dataclass(frozen=True, slots=True)
class Step:
    """One process step (1-based ``index``).

    ``produces`` and ``acts_on`` are the characteristics a ``station`` step makes
    and changes (``simulators.stations``); empty for the physics kinds.
    """

    index: int
    name: str
    kind: str
    factory: str
    partner: str
    params: Mapping[str, float]
    target: str | None = None
    produces: tuple[str, ...] = ()
    acts_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lever:
    """A corrective set point at one step.

    Attributes
    ----------
    name : str
        Lever name in step data and plans.
    step : int
        Step it acts at.
    sets : str
        The step kind's parameter it sets.
    unit : str
        Physical unit of the value.
    nominal : float
        Value used when nobody intervenes.
    lower, upper : float
        Hard physical bounds.
    max_change : float
        Largest allowed ``|value - nominal|``.
    cost_per_use : float
        Cost charged once when the value differs from nominal (currency).
    cost_per_unit : float
        Extra cost per unit of ``|value - nominal|`` (currency / unit).
    integer : bool
        Whether only whole values are physical (e.g. polishing passes).
    description : str
        Free text.
    """

    name: str
    step: int
    sets: str
    unit: str
    nominal: float
    lower: float
    upper: float
    max_change: float
    cost_per_use: float
    cost_per_unit: float = 0.0
    integer: bool = False
    description: str = ""

    @property
    def low(self) -> float:
        """Effective lower limit: hard bound and maximum change together."""
        return max(self.lower, self.nominal - self.max_change)

    @property
    def high(self) -> float:
        """Effective upper limit: hard bound and maximum change together."""
        return min(self.upper, self.nominal + self.max_change)


@dataclass(frozen=True, slots=True)
class Inspection:
    """Gauges at one step: which characteristics, on how many bars per batch."""

    step: int
    measures: tuple[str, ...]
    sample: int


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault type of the catalogue.

    ``magnitude`` is drawn uniformly in ``[low, high]``; with ``symmetric`` the
    sign is random. Its meaning is the channel of the step's kind
    (``simulators.kinds``) in ``unit``.
    """

    name: str
    step: int
    rate: float
    low: float
    high: float
    unit: str
    symmetric: bool = False
    recoverable: str = "yes"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Prior:
    """A prior on a step parameter, relative to the value in the file.

    The parameter is ``file_value * factor``; the prior is on the factor, so one
    prior string fits parameters of any unit and size:

    * ``lognormal(mu, sigma)``: ``log(factor) ~ Normal(mu, sigma)``; ``mu = 0``
      centres the prior on the file's value, ``sigma = 0.3`` puts 94% of it
      within about x0.57 .. x1.76;
    * ``uniform(low, high)``: ``factor ~ Uniform(low, high)``, ``0 < low < high``.

    Attributes
    ----------
    dist : str
        ``"lognormal"`` or ``"uniform"``.
    a, b : float
        ``(mu, sigma)`` or ``(low, high)``.
    """

    dist: str
    a: float
    b: float

    def __str__(self) -> str:
        return f"{self.dist}({self.a:g}, {self.b:g})"

    def sample_log_factor(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws of ``log(factor)``."""
        if self.dist == "lognormal":
            return rng.normal(self.a, self.b, n)
        return np.log(rng.uniform(self.a, self.b, n))

    def log_factor_range(self, width: float = 3.0) -> tuple[float, float]:
        """A range of ``log(factor)`` holding the prior's mass: ``mu +- width sigma``
        for a log-normal, the bounds for a uniform."""
        if self.dist == "lognormal":
            return self.a - width * self.b, self.a + width * self.b
        return float(np.log(self.a)), float(np.log(self.b))

    def log_factor_sd(self) -> float:
        """Standard deviation of ``log(factor)`` under the prior."""
        if self.dist == "lognormal":
            return self.b
        # log of a uniform factor, by the midpoint rule (smooth integrand, no closed form needed).
        f = self.a + (np.arange(4000) + 0.5) / 4000 * (self.b - self.a)
        return float(np.log(f).std())


_PRIOR_FORMS = "'lognormal(mu, sigma)' with sigma > 0 or 'uniform(low, high)' with 0 < low < high"


def parse_prior(text: str) -> Prior:
    """Parse a prior string (see :class:`Prior`).

    Raises
    ------
    ValueError
        If ``text`` is not one of the known forms; the message lists them.

    Examples
    --------
    >>> parse_prior("lognormal(0, 0.3)")
    Prior(dist='lognormal', a=0.0, b=0.3)
    """
    import re

    m = re.fullmatch(r"\s*(\w+)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*", str(text))
    if not m or m.group(1) not in ("lognormal", "uniform"):
        raise ValueError(f"cannot parse prior {text!r}; expected {_PRIOR_FORMS}")
    try:
        a, b = float(m.group(2)), float(m.group(3))
    except ValueError:
        raise ValueError(f"cannot parse prior {text!r}: its arguments must be numbers") from None
    if not (np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"prior {text!r}: arguments must be finite")
    if m.group(1) == "lognormal" and b <= 0:
        raise ValueError(f"prior {text!r}: sigma must be > 0")
    if m.group(1) == "uniform" and not 0 < a < b:
        raise ValueError(f"prior {text!r}: need 0 < low < high")
    return Prior(m.group(1), a, b)


@dataclass(frozen=True, slots=True)
class UncertainParam:
    """A step parameter the plant's history may correct, with its prior.

    Attributes
    ----------
    step : int
        1-based step index.
    param : str
        Parameter name of the step's kind.
    prior : Prior
        Relative to the file's value (``value = file_value * factor``).
    unit : str
        The parameter's unit (``simulators.kinds``).
    """

    step: int
    param: str
    prior: Prior
    unit: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.step, self.param)


@dataclass(frozen=True, slots=True)
class Economics:
    """Money, in ``currency`` per batch.

    Attributes
    ----------
    measurement_cost : float
        Cost of gauging one characteristic on one bar (currency per bar and
        characteristic); what an extra or larger sample costs.
    station_cost : float
        Cost of running one inspection station for one batch (currency per
        batch), on top of its measurements; what adding an inspection step costs.
    """

    batch_value: float
    scrap_cost: float
    processing_cost_per_step: float
    currency: str = "EUR"
    measurement_cost: float = 0.0
    station_cost: float = 0.0
