"""Journal text names no path of the machine that ran it; run.json says what produced a run."""

from __future__ import annotations

import os
import sysconfig

from optiforge.evals.records import portable_text


def test_portable_text_replaces_install_and_home_paths() -> None:
    site = sysconfig.get_paths()["purelib"]
    home = os.path.expanduser("~")
    tb = (
        f'  File "{site}/pyomo/core/base/var.py", line 734, in construct\n'
        f"  cache at {home}/.cache/optiforge\n"
        '  File "/tmp/optiforge-sbx-1/work/program.py", line 1'
    )
    out = portable_text(tb)
    assert site not in out and home + "/" not in out
    assert '"<site-packages>/pyomo/core/base/var.py"' in out
    assert "~/.cache/optiforge" in out
    assert "/tmp/optiforge-sbx-1/work/program.py" in out  # not a machine path: kept
    assert portable_text(None) is None and portable_text("") == ""


def test_code_provenance_names_the_commit_and_versions() -> None:
    import platform

    from optiforge import __version__
    from optiforge.evals.provenance import code_provenance

    p = code_provenance()
    assert p["optiforge_version"] == __version__
    assert p["python"] == platform.python_version()
    assert "pydantic" in p["packages"] and "openai" in p["packages"]
    # tests run from a checkout: the commit is a full hash and the dirty flag a bool
    assert len(p["git_commit"]) == 40 and isinstance(p["git_dirty"], bool)


def test_settings_are_recorded_without_secrets_or_machine_paths() -> None:
    import dataclasses

    from optiforge.config import load_settings
    from optiforge.evals.provenance import settings_dict

    s = dataclasses.replace(load_settings(), api_key="sk-very-secret")
    d = settings_dict(s)
    assert d["api_key"] == "<set>" and "sk-very-secret" not in str(d)
    assert d["model"] == s.model
    home = os.path.expanduser("~")
    assert not any(isinstance(v, str) and v.startswith(home + "/") for v in d.values())


async def test_run_json_records_provenance_per_session(tmp_path) -> None:
    import json
    from types import SimpleNamespace

    from optiforge.datasets.problem import Problem
    from optiforge.evals import run_eval

    async def agent(p):
        return SimpleNamespace(answer=1.0)

    ps = [Problem(id="a", dataset="toy", text="t", answer=1.0)]
    await run_eval(ps, agent, tmp_path, provenance={"server": {"kind": "test"}})
    session = json.loads((tmp_path / "run.json").read_text())["sessions"][0]
    assert session["provenance"]["server"] == {"kind": "test"}
    assert session["provenance"]["git_commit"] and "packages" in session["provenance"]


def test_llm_provenance_of_an_openai_compatible_server(fake_server_url) -> None:
    from optiforge.cli.common import llm_provenance
    from optiforge.llm import LLM

    with LLM(model="fake", base_url=fake_server_url, cache=False) as llm:
        p = llm_provenance(llm)
    assert p["server"]["url"] == fake_server_url and p["server"]["kind"] == "openai-compatible"
    assert p["server"]["served_models"] == ["fake"] and p["settings"]["model"]
    # the client's cache is off (as --no-cache turns it off): run.json says so, whatever
    # the settings' default
    assert p["settings"]["cache"] is False
