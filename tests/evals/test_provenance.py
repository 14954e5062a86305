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
