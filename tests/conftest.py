"""Helpers that more than one test file uses."""

from __future__ import annotations

import os
import subprocess
import sys
import time

# A training script that starts without OMP_WAIT_POLICY sets it and starts itself again (harness.py,
# use_passive_openmp), importing torch twice; the tests' many short runs start with it set instead.
# tests/test_harness.py checks the restart itself with the variable removed.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def interrupt_when_running(script: str, argv: list[str], run_dir, signum: int, cwd,
                           settle_s: float = 0.0) -> subprocess.CompletedProcess:
    """Start `python script argv`, send it `signum` once its run directory exists (and `settle_s` later),
    and wait for it to end."""
    process = subprocess.Popen([sys.executable, script, *argv], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not run_dir.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(settle_s)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
