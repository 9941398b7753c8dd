"""The causal model's errors (one home, so every layer can raise them without
importing the estimator)."""

__all__ = ["DataError", "ModelLoadError"]


class DataError(ValueError):
    """Step data do not fit the model's process, or hold nothing to learn from."""


class ModelLoadError(ValueError):
    """A model directory is missing, incomplete or from an incompatible version."""

