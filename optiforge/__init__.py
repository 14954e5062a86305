"""optiforge: large language models optimize what gradients cannot reach.

Subpackages (imports point one way, see docs/DESIGN.md):

- ``optiforge.trace``: record Python workflows as graphs and propagate feedback.
- ``optiforge.llm``: one client for vLLM, the embedded llama.cpp server and litellm;
  ``optiforge.llm.serving`` starts servers (only when asked) and holds the model store.
- ``optiforge.config``: the settings, read once by the CLI and top-level helpers and
  passed down.
- ``optiforge.prompts``: prompt templates, loaded by name.
- ``optiforge.agents``: OptoPrime, OPRO, TextGrad-style optimizers and the modelling team.
- ``optiforge.solvers``: model IR, Pyomo + HiGHS / SCIP, and a sandbox for generated code.
- ``optiforge.datasets`` and ``optiforge.evals``: shipped benchmarks and eval suites.

``import optiforge`` is kept cheap: nothing heavy is imported here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
