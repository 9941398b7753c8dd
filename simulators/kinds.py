"""The step kinds the simulator knows: their parameters, lever slots and fault channel.

A step in a process file names one of these kinds. The kind fixes which
characteristics (by *role*) the step acts on, which parameters it reads (with
defaults and units), which of those parameters a lever may set, and what an
injected fault does to it. The physics itself lives in ``_kernels.py`` (numba)
and ``reference.py`` (NumPy); both index parameters by the order given here, so
this table is the single place where a parameter's position is defined.

Adding a kind means: a new entry here, one branch in each of the two twins, and
a row in ``docs/process-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["KindSpec", "KINDS", "ROLES", "KIND_IDS", "MAX_PARAMS"]

#: Characteristic roles the physics refers to. A process maps each of its
#: characteristics to at most one role; ``other`` is carried but not simulated.
ROLES: tuple[str, ...] = (
    "diameter",
    "ovality",
    "straightness",
    "yield_strength",
    "residual_stress",
    "coating_thickness",
    "roughness",
    "bend_angle",
    "length",
    "crack",
    "other",
)


@dataclass(frozen=True, slots=True)
class KindSpec:
    """What one step kind reads and does.

    Attributes
    ----------
    name : str
        Kind name used in process files.
    params : Mapping[str, tuple[float, str]]
        Parameter name -> (default, unit), in kernel order.
    lever_params : tuple[str, ...]
        Parameters that a lever may set at run time.
    fault : str or None
        Name of the fault channel (what a fault's magnitude means here).
    fault_unit : str
        Unit of a fault's magnitude on this kind.
    fault_effects : Mapping[str, int]
        Roles a fault on this channel pushes, with the direction of a positive
        magnitude: +1 up, -1 down, 0 either way (symmetric faults). Root-cause
        analysis reads this as the fault's signature.
    acts_on : tuple[str, ...]
        Roles the kind changes (documentation and the causal graph).
    needs : tuple[str, ...]
        Roles that must exist in the process for the kind to run.
    normals : int
        Bar-level standard-normal draws per bar.
    uniforms : int
        Bar-level uniform draws per bar (0 or 1).
    description : str
        One line for engineers.
    uncertain : Mapping[str, str]
        Parameters that usually differ between the handbook and a real plant,
        with their default prior (``docs/process-format.md``, "Uncertain
        physics"): the lever sensitivities, efficiencies, activation energies
        and moduli a calibration learns from the plant's history. A step can
        override or switch them off. Never a lever parameter.
    lever_sensitivities : tuple[str, ...]
        Those of ``uncertain`` that shape the response to the step's levers
        (how hard the rolls bite per kN, how strength falls per degree): a
        history in which the step's levers never moved cannot inform them.
    """

    name: str
    params: Mapping[str, tuple[float, str]]
    lever_params: tuple[str, ...] = ()
    fault: str | None = None
    fault_unit: str = ""
    fault_effects: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    acts_on: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    normals: int = 0
    uniforms: int = 0
    description: str = ""
    uncertain: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    lever_sensitivities: tuple[str, ...] = ()

    def index(self, param: str) -> int:
        """Kernel position of ``param``."""
        return list(self.params).index(param)


def _p(**kw):
    return MappingProxyType(dict(kw))


# Every kind carries ``sigma`` (bar-level) and ``batch_sigma`` (batch-level) first,
# in the unit of its primary characteristic, so the kernel can read them at fixed
# positions 0 and 1. Partner offsets and factory drift are expressed in
# ``batch_sigma`` units, which keeps a process file free of per-unit drift tables.
_KINDS = [
    KindSpec(
        "forming",
        _p(sigma=(0.01, "mm"), batch_sigma=(0.01, "mm"), diameter=(17.0, "mm"),
           ovality=(0.05, "mm"), ovality_sigma=(0.01, "mm"), straightness=(1.5, "mm/m"),
           straightness_sigma=(0.2, "mm/m"), yield_strength=(600.0, "MPa"),
           roughness=(6.0, "um"), length=(6000.0, "mm")),
        acts_on=("diameter", "ovality", "straightness", "yield_strength",
                 "residual_stress", "coating_thickness", "roughness", "bend_angle",
                 "length", "crack"),
        needs=("diameter",), normals=3,
        description="hot rolling of the rod: sets every characteristic's starting value",
    ),
    KindSpec(
        "drawing",
        _p(sigma=(0.004, "mm"), batch_sigma=(0.004, "mm"), reduction=(0.4, "mm"),
           ovality_keep=(0.5, "1"), ovality_sigma=(0.003, "mm"),
           work_hardening=(60.0, "MPa"), roughness_keep=(0.5, "1"),
           residual_stress=(40.0, "MPa")),
        fault="die_wear", fault_unit="mm",
        fault_effects=_p(diameter=1, ovality=1),
        acts_on=("diameter", "ovality", "yield_strength", "roughness", "residual_stress"),
        needs=("diameter",), normals=2,
        description="cold drawing through a die: reduces diameter, hardens, smooths",
    ),
    KindSpec(
        "straightening",
        _p(sigma=(0.03, "mm/m"), batch_sigma=(0.02, "mm/m"), force=(40.0, "kN"),
           force_scale=(25.0, "kN"), floor=(0.08, "mm/m"),
           stress_per_kN=(1.5, "MPa/kN"), fault_straightness=(0.6, "mm/m")),
        lever_params=("force",), fault="misadjustment", fault_unit="1",
        fault_effects=_p(straightness=1),
        acts_on=("straightness", "residual_stress"),
        needs=("straightness",), normals=1,
        description="roller straightening: removes a share of the bow that grows with "
                    "force, and adds residual stress",
        uncertain=_p(force_scale="lognormal(0, 0.3)", stress_per_kN="lognormal(0, 0.3)"),
        lever_sensitivities=("force_scale", "stress_per_kN"),
    ),
    KindSpec(
        "heat_treatment",
        _p(sigma=(8.0, "MPa"), batch_sigma=(10.0, "MPa"), yield_strength=(700.0, "MPa"),
           per_degree=(1.6, "MPa/K"), distortion=(0.15, "mm/m"),
           distortion_per_degree=(0.012, "mm/m/K"), residual_stress=(20.0, "MPa")),
        fault="over_temperature", fault_unit="K",
        fault_effects=_p(yield_strength=1, straightness=1),
        acts_on=("yield_strength", "straightness", "residual_stress"),
        needs=("yield_strength",), normals=2,
        description="austenitising: resets the structure; an over-temperature hardens "
                    "and distorts the bar",
    ),
    KindSpec(
        "quench",
        _p(sigma=(8.0, "MPa"), batch_sigma=(8.0, "MPa"), gain=(450.0, "MPa"),
           residual_stress=(180.0, "MPa")),
        fault="contamination", fault_unit="1",
        fault_effects=_p(yield_strength=-1),
        acts_on=("yield_strength", "residual_stress"),
        needs=("yield_strength",), normals=1,
        description="quench: martensite raises strength; contaminated quenchant "
                    "cools slower and loses part of the gain",
    ),
    KindSpec(
        "temper",
        _p(sigma=(5.0, "MPa"), batch_sigma=(5.0, "MPa"), temperature=(450.0, "degC"),
           reference_temperature=(450.0, "degC"), drop=(150.0, "MPa"),
           temperature_scale=(60.0, "K"), stress_keep=(0.7, "1")),
        lever_params=("temperature",),
        acts_on=("yield_strength", "residual_stress"),
        needs=("yield_strength",), normals=1,
        description="tempering: strength falls exponentially with temperature "
                    "(heat less to keep strength, more to shed it)",
        uncertain=_p(drop="lognormal(0, 0.3)", temperature_scale="lognormal(0, 0.3)"),
        lever_sensitivities=("temperature_scale",),
    ),
    KindSpec(
        "stress_relief",
        _p(sigma=(4.0, "MPa"), batch_sigma=(3.0, "MPa"), temperature=(350.0, "degC"),
           time=(1.0, "h"), rate=(0.7, "1/h"), reference_temperature=(350.0, "degC"),
           activation=(120.0, "kJ/mol"), strength_loss=(6.0, "MPa/h")),
        lever_params=("temperature", "time"),
        acts_on=("residual_stress", "yield_strength"),
        needs=("residual_stress",), normals=1,
        description="stress relief: residual stress relaxes at an Arrhenius rate "
                    "in temperature, exponentially in time",
        uncertain=_p(activation="lognormal(0, 0.2)"), lever_sensitivities=("activation",),
    ),
    KindSpec(
        "grinding",
        _p(sigma=(0.002, "mm"), batch_sigma=(0.002, "mm"), removal=(60.0, "um"),
           allowance=(0.0, "um"), ovality_keep=(0.4, "1"), roughness=(0.6, "um"),
           roughness_sigma=(0.05, "um"), burn_stress=(250.0, "MPa")),
        lever_params=("allowance",), fault="burn", fault_unit="1", uniforms=1,
        fault_effects=_p(crack=1, residual_stress=1),
        acts_on=("diameter", "ovality", "roughness", "crack", "residual_stress"),
        needs=("diameter",), normals=2,
        description="centreless grinding: removes stock from the diameter and rounds "
                    "the bar (more stock, rounder); grinding burn cracks the surface",
    ),
    KindSpec(
        "polishing",
        _p(sigma=(0.01, "um"), batch_sigma=(0.005, "um"), passes=(1.0, "1"),
           extra_passes=(0.0, "1"), floor=(0.05, "um"), per_pass=(0.9, "1"),
           removal=(1.0, "um")),
        lever_params=("extra_passes",), fault="glazing", fault_unit="1",
        fault_effects=_p(roughness=1),
        acts_on=("roughness", "diameter", "coating_thickness"),
        needs=("roughness",), normals=1,
        description="polishing: each pass removes a share of the roughness above a "
                    "floor (diminishing returns) and a micrometre of material",
        uncertain=_p(per_pass="lognormal(0, 0.2)", removal="lognormal(0, 0.3)"),
    ),
    KindSpec(
        "plating",
        _p(sigma=(0.03, "1"), batch_sigma=(0.03, "1"), time=(30.0, "min"),
           current=(50.0, "A/dm2"), efficiency=(0.2, "1"), deposition=(0.0933, "um/(A/dm2*min)"),
           roughness_add=(0.03, "um")),
        lever_params=("time", "current"), fault="current_drop", fault_unit="1",
        fault_effects=_p(coating_thickness=-1, diameter=-1),
        acts_on=("coating_thickness", "diameter", "roughness"),
        needs=("coating_thickness",), normals=1,
        description="hard chroming: thickness grows with time x current x efficiency "
                    "(Faraday); noise is relative",
        uncertain=_p(efficiency="lognormal(0, 0.2)"),
    ),
    KindSpec(
        "bending",
        _p(sigma=(0.12, "deg"), batch_sigma=(0.08, "deg"), angle=(90.0, "deg"),
           overbend=(0.0, "deg"), reference_yield=(920.0, "MPa"), radius=(33.0, "mm"),
           modulus=(210000.0, "MPa"), critical_coating=(45.0, "um"),
           coating_scale=(2.0, "um"), residual_stress=(15.0, "MPa")),
        lever_params=("overbend",), fault="misalignment", fault_unit="deg", uniforms=1,
        fault_effects=_p(bend_angle=0),
        acts_on=("bend_angle", "crack", "residual_stress"),
        needs=("bend_angle", "yield_strength", "diameter"), normals=1,
        description="bending with springback compensation for the nominal strength; "
                    "springback grows nonlinearly with yield strength; thick chrome cracks",
        uncertain=_p(modulus="lognormal(0, 0.2)"),
    ),
    KindSpec(
        "rebend",
        _p(sigma=(0.08, "deg"), batch_sigma=(0.0, "deg"), angle=(0.0, "deg"),
           radius=(33.0, "mm"), modulus=(210000.0, "MPa"),
           critical_coating=(45.0, "um"), coating_scale=(2.0, "um"), risk=(0.5, "1")),
        lever_params=("angle",), uniforms=1,
        acts_on=("bend_angle", "crack"),
        needs=("bend_angle", "yield_strength", "diameter"), normals=1,
        description="re-bend of an earlier bend by a commanded angle (after springback); "
                    "idle at 0; a re-bend of plated bar can crack the chrome",
        uncertain=_p(modulus="lognormal(0, 0.2)"), lever_sensitivities=("modulus",),
    ),
    KindSpec(
        "cutting",
        _p(sigma=(0.2, "mm"), batch_sigma=(0.1, "mm"), length=(600.0, "mm")),
        acts_on=("length",), needs=("length",), normals=1,
        description="cut to length",
    ),
    KindSpec(
        "transport",
        _p(sigma=(0.01, "mm/m"), batch_sigma=(0.0, "mm/m")),
        acts_on=("straightness",), needs=(), normals=1,
        description="transport between factories: handling adds a little bow",
    ),
    KindSpec("washing", _p(sigma=(0.0, "1"), batch_sigma=(0.0, "1")),
             description="washing, rinsing, degreasing: no change to the characteristics"),
    KindSpec("inspection", _p(sigma=(0.0, "1"), batch_sigma=(0.0, "1")),
             description="gauges a sample of bars; changes nothing"),
    # Last, so the ids of the kinds above (and cached kernels) do not move.
    KindSpec("machining", _p(sigma=(0.0, "1"), batch_sigma=(0.0, "1")),
             description="sawing, milling, turning of partner processes: carried for data "
                         "only, not simulated (the kernel draws its batch-level normal and "
                         "changes nothing)"),
    # A partner's own station (issue 22): what it produces and acts on is listed on the
    # step itself (``produces``, ``acts_on``), not derived from roles; the causal model
    # learns each characteristic's noise there. Like machining, not simulated.
    KindSpec("station", _p(sigma=(0.0, "1"), batch_sigma=(0.0, "1")),
             description="a partner's own working station: produces the characteristics its "
                         "step lists in 'produces' and changes those in 'acts_on'; no physics "
                         "(not simulated: the causal model learns it from data)"),
]

KINDS: Mapping[str, KindSpec] = MappingProxyType({k.name: k for k in _KINDS})
KIND_IDS: Mapping[str, int] = MappingProxyType({k.name: i for i, k in enumerate(_KINDS)})
MAX_PARAMS: int = max(len(k.params) for k in _KINDS)
