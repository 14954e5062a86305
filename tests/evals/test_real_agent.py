"""The runner with the real agent (optiforge.agents.asolve, direct route) and a scripted LLM:
real Pyomo programs run in the real sandbox; only the model's replies are fixed."""

import json

from optiforge.datasets import load_dataset
from optiforge.evals import read_journal, run_eval
from optiforge.evals.scoring import DEFAULT_RULE

# nl4opt-0001: sled dogs (100 fish, $50) vs trucks (300 fish, $100), budget $1000,
# dog trips < truck trips; maximise fish. Optimum 3000.
RIGHT = """```python
import pyomo.environ as pyo

m = pyo.ConcreteModel()
m.dogs = pyo.Var(domain=pyo.NonNegativeIntegers)
m.trucks = pyo.Var(domain=pyo.NonNegativeIntegers)
m.obj = pyo.Objective(expr=100 * m.dogs + 300 * m.trucks, sense=pyo.maximize)
m.c_budget = pyo.Constraint(expr=50 * m.dogs + 100 * m.trucks <= 1000)
m.c_order = pyo.Constraint(expr=m.dogs <= m.trucks - 1)
res = pyo.SolverFactory('appsi_highs').solve(m)
report(model=m, results=res)
```"""

BROKEN = """```python
import pyomo.environ as pyo
m = pyo.ConcreteModel()
m.x = pyo.Var()
res = undefined_name
report(model=m, results=res)
```"""


async def test_direct_agent_through_the_runner(tmp_path, scripted_llm):
    from optiforge.agents import asolve

    def script(messages, **kw):
        text = messages[-1]["content"]
        return RIGHT if "sled dogs" in text else BROKEN

    llm = scripted_llm(script)
    problems = load_dataset("nl4opt", ids=["nl4opt-0001", "nl4opt-0002"])

    async def agent(problem):
        return await asolve(problem.text, llm=llm, agent="direct")

    out = await run_eval(problems, agent, tmp_path, concurrency=2)
    assert out.finished == 2
    recs = read_journal(tmp_path).latest()
    good, bad = recs["nl4opt-0001"], recs["nl4opt-0002"]
    assert good.prediction == 3000.0 and good.correct[DEFAULT_RULE] is True, good
    assert good.solve_status == "optimal" and good.executed and "appsi_highs" in good.code
    assert good.calls >= 1 and good.steps
    assert bad.correct[DEFAULT_RULE] is False and bad.failure_class == "code_error"
    assert not bad.executed and "undefined_name" in (bad.error or "")
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["execution_rate"] == 0.5 and s["failure_classes"] == {"code_error": 1}
    html = (tmp_path / "report.html").read_text()
    assert "undefined_name" in html and "appsi_highs" in html
