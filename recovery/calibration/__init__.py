"""Calibration of the process file's physics from the plant's history.

The process file holds handbook physics; a plant differs from it. This package
turns the plant's step data into a posterior over the file's uncertain physics
parameters, and hands that posterior to everything that plans.

- :mod:`recovery.calibration.posterior`: :class:`PhysicsPosterior`, the saved
  result (draws of the uncertain parameters, their report, the predictive
  checks), and how a draw becomes a runnable :class:`~simulators.definition.Process`.

Layer: imports ``simulators`` and ``recovery.data``/``recovery.causal`` only;
``recovery.agents`` and above import it.
"""

from recovery.calibration.posterior import (CalibrationLoadError, ParameterSummary,
                                            PhysicsPosterior, PredictiveCheck)

__all__ = ["CalibrationLoadError", "ParameterSummary", "PhysicsPosterior", "PredictiveCheck"]
