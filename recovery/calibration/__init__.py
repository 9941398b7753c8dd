"""Calibration of the process file's physics from the plant's history.

The process file holds handbook physics; a plant differs from it. This package
turns the plant's step data into a posterior over the file's uncertain physics
parameters, and hands that posterior to everything that plans.

- :mod:`recovery.calibration.posterior`: :class:`PhysicsPosterior`, the saved
  result (draws of the uncertain parameters, their report, the predictive
  checks), and how a draw becomes a runnable :class:`~simulators.definition.Process`.
- :mod:`recovery.calibration.surrogate`: :func:`calibrate`, the history to a
  posterior (summaries, emulator, NUTS); :mod:`~recovery.calibration.summaries`
  (the history's structure check and summary statistics),
  :mod:`~recovery.calibration.emulator`, :mod:`~recovery.calibration.checks`
  (posterior predictive checks).

Layer: imports ``simulators`` and ``recovery.data``/``recovery.causal`` only;
``recovery.agents`` and above import it.
"""

from recovery.calibration.surrogate import CalibrationConfig, CalibrationError, calibrate
from recovery.calibration.posterior import (CalibrationLoadError, ParameterSummary,
                                            PhysicsPosterior, PredictiveCheck)

__all__ = ["CalibrationConfig", "CalibrationError", "CalibrationLoadError", "ParameterSummary",
           "PhysicsPosterior", "PredictiveCheck", "calibrate"]
