"""Helpers that more than one test file uses."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

# The suite runs on the CPU whatever GPU the machine has, since its properties are the CPU's (the same seed
# gives the same losses on the CPU only): CUDA is hidden from this process and, through os.environ, from every
# script it starts. CUDA reads the variable once, when it starts, so this comes before any test imports torch.
# A test that needs the GPU takes the `cuda` fixture and runs its GPU part in a script of its own.
VISIBLE_GPUS = os.environ.get("CUDA_VISIBLE_DEVICES")  # as the suite was started, for the `cuda` fixture
os.environ["CUDA_VISIBLE_DEVICES"] = ""


@dataclasses.dataclass
class Cuda:
    env: dict[str, str]  # os.environ with the GPUs visible again: for subprocess.run(..., env=cuda.env)
    gpus: int  # how many GPUs a script started with `env` sees


@pytest.fixture(scope="session")
def cuda() -> Cuda:
    """The environment of a script that may use the GPUs, and how many it sees; the test is skipped, with
    the reason, where torch sees none (a CPU build of torch, or no GPU)."""
    import torch

    if torch.version.cuda is None and torch.version.hip is None:
        pytest.skip(f"needs a CUDA GPU: torch {torch.__version__} is a CPU build")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if VISIBLE_GPUS is not None:
        env["CUDA_VISIBLE_DEVICES"] = VISIBLE_GPUS
    seen = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"], env=env,
                          capture_output=True, text=True)
    gpus = int(seen.stdout.strip()) if seen.returncode == 0 else 0
    if gpus == 0:
        pytest.skip("needs a CUDA GPU: torch sees none on this machine")
    return Cuda(env, gpus)


class SmallFilesystem(type(pathlib.Path())):
    """The mount point of a real 1 MiB tmpfs (a pathlib.Path), which a test can remount read-only."""

    def remount_read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self)], check=True)


@pytest.fixture
def small_filesystem(tmp_path):
    """A real, small filesystem for the faults of a full disk and a read-only one: a 1 MiB tmpfs mounted for
    the test and unmounted after it. Mounting needs root (CI runs as root); elsewhere the test is skipped."""
    mount_point = SmallFilesystem(tmp_path / "small")
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8) (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


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


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    """The (agent step, value) points of a TensorBoard tag in a run directory ([] when it has none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def main_ends_in_one_line(main, argv: list[str], cwd, monkeypatch, capsys) -> str:
    """Run a script's main() in this process with `argv` in `cwd`: it must end in SystemExit(2) after exactly
    one line on stderr (any other exception, i.e. a traceback, fails the test) and create nothing in `cwd`.
    Returns the line."""
    import os

    import pytest
    import torch

    made = sorted(os.listdir(cwd))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", argv)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert sorted(os.listdir(cwd)) == made  # nothing created: no run directory, no videos
    return lines[0]
