"""Ctrl-C on `optiforge serve --local` ends the process even if freeing the model hangs."""

import subprocess
import sys
import time

HANGS = (
    "import time\n"
    "from optiforge.cli.serve import _stop_within\n"
    "_stop_within(lambda: time.sleep(60), 0.5)\n"
    "print('returned')\n"
)
RETURNS = (
    "from optiforge.cli.serve import _stop_within\n"
    "seen = []\n"
    "_stop_within(lambda: seen.append(1), 5)\n"
    "print('returned', seen)\n"
)


def test_a_stop_that_hangs_ends_the_process_with_a_message():
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", HANGS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "did not free its model within 0.5 s; exiting anyway" in out.stdout
    assert "returned" not in out.stdout
    assert time.monotonic() - t0 < 30


def test_a_stop_that_returns_lets_the_command_finish():
    out = subprocess.run([sys.executable, "-c", RETURNS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "returned [1]" in out.stdout
