"""The calibrated physics: posterior draws of the process file's uncertain parameters.

A :class:`PhysicsPosterior` is what calibration produces and what planners,
the rl trainer and the service consume. It is plain data: which parameters
(``(step, param)`` keys), their draws in the parameter's own unit, a per-parameter
report and the posterior predictive checks. ``processes`` turns draws into
runnable process variants with :meth:`simulators.definition.Process.with_params`,
so nothing downstream needs to know how the posterior was obtained.

Saved as two files in a folder: ``calibration.json`` (everything but the draws)
and ``calibration_draws.npy``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from simulators.definition import Process
from simulators.process import as_rng

__all__ = ["CalibrationLoadError", "ParameterSummary", "PredictiveCheck", "PhysicsPosterior",
           "FORMAT"]

#: Bump when the saved layout changes; ``load`` refuses other formats.
FORMAT = 1
_JSON = "calibration.json"
_DRAWS = "calibration_draws.npy"


class CalibrationLoadError(ValueError):
    """A saved calibration cannot be used (missing, other format, other process)."""


@dataclass(frozen=True, slots=True)
class ParameterSummary:
    """One uncertain parameter: the file's value against what the history says.

    Attributes
    ----------
    step : int
        1-based step index.
    param : str
        Parameter name of the step's kind (``simulators.kinds``).
    unit : str
        The parameter's unit.
    file_value : float
        Value in the process file.
    mean, low, high : float
        Posterior mean and 94% interval, in ``unit``.
    informed : bool
        Whether the history informs it (posterior clearly narrower than the prior);
        an uninformed parameter keeps its prior and says so.
    """

    step: int
    param: str
    unit: str
    file_value: float
    mean: float
    low: float
    high: float
    informed: bool


@dataclass(frozen=True, slots=True)
class PredictiveCheck:
    """A posterior predictive check of one inspection and characteristic."""

    step: int
    characteristic: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class PhysicsPosterior:
    """Posterior draws of a process's uncertain physics parameters.

    Parameters
    ----------
    process_name, process_digest : str
        The process file the parameters belong to (structure and file values).
    keys : sequence of (int, str)
        ``(step, param)`` of each uncertain parameter, in column order.
    draws : ndarray (n_draws, n_keys)
        Posterior draws in each parameter's own unit.
    method : str
        How it was obtained (e.g. ``"smc"``).
    converged : bool
        Whether the method's diagnostics passed.
    diagnostics : dict
        The method's own figures (R-hat, ESS, SMC stages, ...).
    parameters : sequence of ParameterSummary
    checks : sequence of PredictiveCheck
    seconds : float
        Wall time of the calibration.
    """

    process_name: str
    process_digest: str
    keys: tuple[tuple[int, str], ...]
    draws: np.ndarray
    method: str
    converged: bool
    diagnostics: dict = field(default_factory=dict)
    parameters: tuple[ParameterSummary, ...] = ()
    checks: tuple[PredictiveCheck, ...] = ()
    seconds: float = 0.0

    def __post_init__(self):
        draws = np.asarray(self.draws, dtype=np.float64)
        if draws.ndim != 2 or draws.shape[1] != len(self.keys):
            raise ValueError(f"draws must have shape (n_draws, {len(self.keys)}), got {draws.shape}")
        object.__setattr__(self, "draws", draws)
        object.__setattr__(self, "keys", tuple((int(s), str(p)) for s, p in self.keys))

    @property
    def n_draws(self) -> int:
        return int(self.draws.shape[0])

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 characters) of the draws, their parameters and the method: what a
        plan made with this physics depends on (part of a recommendation's input hash; computed once,
        since the service hashes every request's inputs)."""
        h = hashlib.sha256(f"{self.process_digest}|{self.method}|{self.keys}|".encode())
        h.update(np.ascontiguousarray(self.draws).tobytes())
        return h.hexdigest()[:16]

    def failed_checks(self) -> tuple[tuple[int, str], ...]:
        """``(step, characteristic)`` the calibrated simulator cannot reproduce."""
        return tuple((c.step, c.characteristic) for c in self.checks if not c.ok)

    def values(self, i: int) -> dict[tuple[int, str], float]:
        """Draw ``i`` as ``{(step, param): value}``."""
        return {k: float(v) for k, v in zip(self.keys, self.draws[i])}

    def mean_values(self) -> dict[tuple[int, str], float]:
        return {k: float(v) for k, v in zip(self.keys, self.draws.mean(axis=0))}

    def sample_indices(self, n: int, rng: int | np.random.Generator | None) -> np.ndarray:
        """``n`` draw indices, without replacement while ``n <= n_draws``."""
        rng = as_rng(rng)
        return rng.choice(self.n_draws, size=n, replace=n > self.n_draws)

    def processes(self, base: Process, n: int, rng: int | np.random.Generator | None
                  ) -> list[Process]:
        """``n`` process variants of ``base`` with physics drawn from the posterior.

        Raises
        ------
        CalibrationLoadError
            If ``base`` does not have the structure this calibration was made for.
        """
        self.check_process(base)
        return [base.with_params(self.values(int(i)), label=f"calibration draw {int(i)}")
                for i in self.sample_indices(n, rng)]

    def check_process(self, process: Process) -> None:
        """Refuse a process that is not the one calibrated (by name and keys)."""
        if process.name != self.process_name:
            raise CalibrationLoadError(f"calibration is for process '{self.process_name}', "
                                       f"not '{process.name}'")
        for step, param in self.keys:
            if not 1 <= step <= process.n_steps or param not in process.step(step).params:
                raise CalibrationLoadError(f"calibration parameter step {step} '{param}' "
                                           f"does not exist in process '{process.name}'")

    # ---- persistence -----------------------------------------------------
    def to_json(self) -> dict:
        """The JSON contract of ``recovery calibrate --json``."""
        return {
            "process": {"name": self.process_name, "digest": self.process_digest},
            "method": self.method,
            "converged": bool(self.converged),
            "seconds": float(self.seconds),
            "diagnostics": self.diagnostics,
            "parameters": [{k: v for k, v in asdict(p).items()} for p in self.parameters],
            "checks": [asdict(c) for c in self.checks],
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``calibration.json`` and ``calibration_draws.npy`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        doc = self.to_json() | {"format": FORMAT, "keys": [list(k) for k in self.keys]}
        tmp = d / (_JSON + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        np.save(d / _DRAWS, self.draws)
        tmp.replace(d / _JSON)
        return d

    @classmethod
    def exists(cls, directory: str | Path) -> bool:
        return (Path(directory) / _JSON).is_file()

    @classmethod
    def load(cls, directory: str | Path) -> "PhysicsPosterior":
        """Read a saved calibration.

        Raises
        ------
        CalibrationLoadError
            Missing files or another format.
        """
        d = Path(directory)
        try:
            doc = json.loads((d / _JSON).read_text())
            draws = np.load(d / _DRAWS)
        except FileNotFoundError:
            raise CalibrationLoadError(f"{d.name}: no calibration ({_JSON}) in this folder") from None
        except (OSError, ValueError) as exc:
            raise CalibrationLoadError(f"{d.name}: cannot read the calibration: {exc}") from None
        if doc.get("format") != FORMAT:
            raise CalibrationLoadError(f"{d.name}: calibration format {doc.get('format')}, "
                                       f"this version reads {FORMAT}")
        return cls(
            process_name=doc["process"]["name"], process_digest=doc["process"]["digest"],
            keys=tuple(tuple(k) for k in doc["keys"]), draws=draws, method=doc["method"],
            converged=bool(doc["converged"]), diagnostics=doc.get("diagnostics", {}),
            parameters=tuple(ParameterSummary(**p) for p in doc.get("parameters", [])),
            checks=tuple(PredictiveCheck(**c) for c in doc.get("checks", [])),
            seconds=float(doc.get("seconds", 0.0)),
        )


def from_values(process: Process, values: Sequence[dict[tuple[int, str], float]], *,
                method: str = "given") -> PhysicsPosterior:
    """A posterior made of given parameter sets (tests, and a plant known exactly)."""
    keys = tuple(sorted({k for v in values for k in v}))
    draws = np.array([[v.get(k, process.step(k[0]).params[k[1]]) for k in keys] for v in values])
    return PhysicsPosterior(process.name, process.digest, keys, draws, method, True)
