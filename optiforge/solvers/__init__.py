"""Solvers: the model IR, HiGHS and SCIP adapters, and a sandbox for generated code.

Names are imported lazily so that ``import optiforge.solvers`` never imports pyomo, highspy
or pyscipopt:

- ``ModelIR``, ``IRSet``, ``IRParameter``, ``IRVariable``, ``IRObjective``, ``IRConstraint``,
  ``validate_ir`` (``optiforge.solvers.ir``)
- ``classify_ir``, ``IRClass`` (``optiforge.solvers.compile``)
- ``solve_ir`` (``optiforge.solvers.solve``)
- ``ir_to_markdown``, ``ir_to_pyomo_code``, ``ir_markdown``, ``ir_plaintext``, ``ir_code``,
  ``ir_expanded`` (``optiforge.solvers.render``)
- ``sandbox_outcome`` (``optiforge.solvers.outcome``): a sandbox run -> SolveResult or error
- ``run_sandboxed``, ``arun_sandboxed``, ``SandboxPool``, ``SandboxResult``, ``ExitReason``
  (``optiforge.solvers.sandbox``); ``parse_objective_line`` (``optiforge.solvers.protocol``)
- ``SolveResult``, ``SolveStatus`` (``optiforge.solvers.result``)
- ``IRValidationError``, ``SolverError``, ``SandboxError`` (``optiforge.solvers.errors``)

See docs/solvers.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelIR": "optiforge.solvers.ir",
    "IRSet": "optiforge.solvers.ir",
    "IRParameter": "optiforge.solvers.ir",
    "IRVariable": "optiforge.solvers.ir",
    "IRObjective": "optiforge.solvers.ir",
    "IRConstraint": "optiforge.solvers.ir",
    "validate_ir": "optiforge.solvers.ir",
    "classify_ir": "optiforge.solvers.compile",
    "IRClass": "optiforge.solvers.compile",
    "solve_ir": "optiforge.solvers.solve",
    "ir_to_markdown": "optiforge.solvers.render",
    "ir_to_pyomo_code": "optiforge.solvers.render",
    "ir_markdown": "optiforge.solvers.render",
    "ir_plaintext": "optiforge.solvers.render",
    "ir_code": "optiforge.solvers.render",
    "ir_expanded": "optiforge.solvers.render",
    "sandbox_outcome": "optiforge.solvers.outcome",
    "run_sandboxed": "optiforge.solvers.sandbox",
    "arun_sandboxed": "optiforge.solvers.sandbox",
    "SandboxPool": "optiforge.solvers.sandbox",
    "SandboxResult": "optiforge.solvers.sandbox",
    "ExitReason": "optiforge.solvers.sandbox",
    "parse_objective_line": "optiforge.solvers.protocol",
    "SolveResult": "optiforge.solvers.result",
    "SolveStatus": "optiforge.solvers.result",
    "IRValidationError": "optiforge.solvers.errors",
    "SolverError": "optiforge.solvers.errors",
    "SandboxError": "optiforge.solvers.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optiforge.solvers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
