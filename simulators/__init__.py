"""Simulator of a multi-factory, multi-step bar process.

Pure physics and data generation: this package never imports ``recovery``
(``tests/test_layers.py`` checks it).

- ``definition``: process files -> frozen dataclasses (``load_process``), and
  the process's rules (``Process.accepts``, ``Process.gate_flags`` and
  ``gate_outside``, ``Process.free_levers``); the one import path for its
  private modules ``_entries``, ``_process_def``, ``_compiled`` (the arrays
  the kernel reads) and ``_process_file`` (reading the TOML)
- ``kinds``: the step kinds, their parameters, levers and fault channels
- ``units``: unit parsing and conversion (pint)
- ``_kernels``: the numba kernels (private; flags in ``_config``);
  ``reference``: their NumPy twins
- ``process``: public rollouts (``Simulator``)
- ``schema``: the step table (observations and truth) and its check
- ``campaign``: many batches to Parquet in seeded chunks (``recovery.distributed``
  spreads the chunks on Dask)
- ``cases``: flagged cases, frozen at the inspection that flags them
- ``env``: the gymnasium env ``MetalBarRecovery-v0`` and its vectorised variant

May import: NumPy, numba, pandas, pyarrow, pandera (the schema's check),
pint, tqdm and gymnasium (the env and the registration below); never
``recovery``.

``import simulators`` registers ``MetalBarRecovery-v0`` with gymnasium by
entry-point strings, so ``gym.make("MetalBarRecovery-v0")`` and
``gym.make_vec("MetalBarRecovery-v0", num_envs=8, vectorization_mode="vector_entry_point")``
work; ``simulators.env`` and numba load only when an env is made.
"""

from simulators.definition import Process, ProcessDefinitionError, load_process

__all__ = ["ENV_ID", "Process", "ProcessDefinitionError", "load_process"]

ENV_ID = "MetalBarRecovery-v0"


def _register_envs() -> None:
    """Register the env and its vector form; no-op without gymnasium or when done."""
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # gymnasium is only needed for the RL side
        return
    if ENV_ID in registry:
        return
    from simulators.definition import decision_step_count

    # The time limit is the number of decisions of the default process (an
    # episode ends at the process's last step anyway; this is the safety net
    # gymnasium's TimeLimit wrapper provides).
    register(id=ENV_ID, entry_point="simulators.env:MetalBarRecoveryEnv",
             vector_entry_point="simulators.env:make_vector_env",
             max_episode_steps=decision_step_count("default"))


_register_envs()
