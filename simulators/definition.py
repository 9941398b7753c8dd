"""Process definition: a TOML process file loaded into frozen, typed dataclasses.

The file format is documented in ``docs/process-format.md``. ``load_process()``
with no argument loads the built-in 50-step chromed seat-bar process;
``load_process("small")`` loads the 12-step process the tests use; any other
value is a path.

Every error names the file and the offending entry, e.g.
``small.toml: steps[3] (step 4): unknown kind 'quenchh'``.

This module is the one import path for all of it. The code lives in four
private modules, one concern each:

- ``_entries``: the file's entries as dataclasses (characteristics, gates,
  partners, factories, steps, levers, inspections, faults, economics), the
  priors of the uncertain physics, and :class:`ProcessDefinitionError`;
- ``_process_def``: :class:`Process`, the whole definition, and its rules
  (acceptance, gate flags, free levers, lever bounds);
- ``_compiled``: :class:`CompiledProcess`, the process as arrays for the
  numba kernel (``Process.arrays``);
- ``_process_file``: reading and validating the TOML file
  (:func:`load_process`, :func:`parse_process`; :class:`TableReader`, which
  other TOML readers of the project can share).

Their classes and functions say ``simulators.definition`` as their module,
so reprs, pickles and documentation name the public path.
"""

from __future__ import annotations

from simulators._compiled import CompiledProcess
from simulators._entries import (Characteristic, Economics, Factory, Fault, Gate, Inspection, Lever, Partner,
                                 Prior, ProcessDefinitionError, Step, UncertainParam, parse_prior)
from simulators._process_def import Process
from simulators._process_file import BUILTIN_PROCESSES, TableReader, decision_step_count, load_process, parse_process

__all__ = [
    "Characteristic", "Gate", "Partner", "Factory", "Step", "Lever", "Inspection",
    "Fault", "Economics", "Process", "ProcessDefinitionError", "load_process",
    "BUILTIN_PROCESSES", "Prior", "UncertainParam", "parse_prior",
    "parse_process", "decision_step_count", "CompiledProcess", "TableReader",
]

for _obj in (CompiledProcess, Characteristic, Economics, Factory, Fault, Gate, Inspection, Lever, Partner, Prior,
             ProcessDefinitionError, Step, UncertainParam, parse_prior, Process, decision_step_count,
             load_process, parse_process, TableReader):
    _obj.__module__ = __name__
del _obj
