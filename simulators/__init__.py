"""Simulator of a multi-factory, multi-step bar process.

Pure physics and data generation: this package never imports ``recovery``.

- ``definition``: process files -> frozen dataclasses (``load_process``)
- ``kinds``: the step kinds, their parameters, levers and fault channels
- ``_kernels``: the numba kernel (private); ``reference``: its NumPy twin
- ``process``: public rollouts (``Simulator``)
- ``env``: the gymnasium env ``MetalBarRecovery-v0`` and its vectorised variant
"""

from simulators.definition import Process, ProcessDefinitionError, load_process

__all__ = ["Process", "ProcessDefinitionError", "load_process"]
