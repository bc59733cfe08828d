"""Nothing lost (issue 21): each fault is the real one, on the real scripts. A reused run name, a full disk and a
read-only one (a real tmpfs), a diverging run (a real huge learning rate), a memory larger than the machine
(sized from this machine's own MemAvailable), two processes on one run directory, and saving by default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from conftest import main_ends_in_one_line  # noqa: E402
import a2c_atari  # noqa: E402
import dqn_atari  # noqa: E402
import harness  # noqa: E402
import ppo_atari  # noqa: E402

TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
        "--total-timesteps", "64", "--no-progress", "--torch-threads", "1", "--env-threads", "1", "--eval-episodes", "0"]


def run(script: str, *argv, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, status: int) -> str:
    """The process ended with `status` after exactly one line on stderr that starts with "error: "."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


# --- 1. a reused --run-name ---------------------------------------------------------------------------------------

def test_a_taken_run_name_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"the first run's")
    line = main_ends_in_one_line(ppo_atari.main, ["ppo_atari.py", *TINY, "--run-name", "x"], tmp_path, monkeypatch,
                                 capsys)
    assert line == ("error: run directory 'runs/x' already exists: continue that run with --resume runs/x, "
                    "or choose another --run-name")
    assert os.listdir(run_dir) == ["checkpoint.pt"] and (run_dir / "checkpoint.pt").read_bytes() == b"the first run's"
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "events.out.tfevents.1.vm").write_bytes(b"")
    line = main_ends_in_one_line(ppo_atari.main, ["ppo_atari.py", *TINY, "--run-name", "x"], tmp_path, monkeypatch,
                                 capsys)
    assert line == "error: run directory 'runs/x' already holds another run's files: choose another --run-name"


def test_two_processes_never_write_one_run_directory(tmp_path, monkeypatch, capsys):
    """While one process holds a run directory (here this test, as a training run would), a --resume of the
    same directory ends in one line instead of writing beside it."""
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    agent = ppo_atari.Agent(4)
    torch.save(dict(harness.model_file(ppo_atari.Args(**{"num_envs": 2}), "ppo", agent, 4),
                    optimizer=torch.optim.Adam(agent.parameters()).state_dict(), global_step=0, rng=[], iteration=0,
                    run_name="x"), run_dir / "checkpoint.pt")
    fd = harness.lock_run_directory(str(run_dir))
    try:
        with pytest.raises(SystemExit) as stop:
            monkeypatch.chdir(tmp_path)
            monkeypatch.setattr(sys, "argv", ["ppo_atari.py", "--resume", "runs/x", *TINY[-7:]])
            ppo_atari.main()
    finally:
        os.close(fd)
    assert stop.value.code == 2
    assert "another process is writing the run directory 'runs/x'" in capsys.readouterr().err
    assert sorted(os.listdir(run_dir)) == [".lock", "checkpoint.pt"]  # no events written beside the other run


# --- 2. a full disk and a read-only one, for real ------------------------------------------------------------

@pytest.mark.slow
def test_a_checkpoint_onto_a_full_disk_is_one_line_and_leaves_no_tmp(small_filesystem, tmp_path):
    """PPO's checkpoint (20 MB) onto a real 1 MiB filesystem: one line, exit 2, nothing half-written."""
    result = run("ppo_atari.py", *TINY, "--runs-dir", str(small_filesystem), "--run-name", "r", cwd=tmp_path)
    line = one_error_line(result, 2)
    assert line.startswith(f"error: cannot write '{small_filesystem}/r/checkpoint.pt' (No space left on device)")
    assert not any(name.endswith(".tmp") for name in os.listdir(small_filesystem / "r"))


@pytest.mark.slow
def test_tensorboard_events_onto_a_full_disk_are_one_line(small_filesystem, tmp_path):
    """A disk with no byte left when the run starts: the event writer's thread meets the full disk; the run
    ends in one line, without the thread's traceback."""
    with open(small_filesystem / "filler", "wb") as f:
        with pytest.raises(OSError):
            f.write(b"\0" * 2**21)
    result = run("ppo_atari.py", *TINY, "--no-save-model", "--runs-dir", str(small_filesystem), "--run-name", "r",
                 cwd=tmp_path)
    line = one_error_line(result, 2)
    assert line.startswith("error: cannot write the ") and f"'{small_filesystem}/r' (No space left on device)" in line


@pytest.mark.slow
def test_a_replay_video_onto_a_full_or_read_only_disk_is_one_line_and_keeps_the_old_video(small_filesystem):
    videos = small_filesystem / "videos"
    videos.mkdir()
    (videos / "random_breakout.mp4").write_bytes(b"the video before")
    with open(small_filesystem / "filler", "wb") as f:
        with pytest.raises(OSError):
            f.write(b"\0" * 2**21)
    result = run("ppo_atari.py", "--run", "random", "--run-episodes", "1", cwd=small_filesystem)
    assert "cannot write the video 'videos/random_breakout.mp4'" in one_error_line(result, 2)
    assert sorted(os.listdir(videos)) == ["random_breakout.mp4"]
    assert (videos / "random_breakout.mp4").read_bytes() == b"the video before"


@pytest.mark.slow
def test_a_read_only_runs_dir_is_one_line_before_anything_starts(small_filesystem, tmp_path):
    """As root (CI), a chmod does not stop a write; a filesystem remounted read-only does."""
    small_filesystem.remount_read_only()
    result = run("dqn_atari.py", "--buffer-size", "1000", "--runs-dir", str(small_filesystem / "runs"), cwd=tmp_path)
    assert "is not writable here" in one_error_line(result, 2)


# --- 3. a diverging run: a real huge learning rate -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("script, argv", [
    ("a2c_atari.py", ["--num-envs", "16", "--learning-rate", "1e30", "--checkpoint-every", "80"]),
    ("ppo_atari.py", [*TINY[:8], "--learning-rate", "1e30", "--checkpoint-every", "32"]),
])
def test_a_diverging_run_stops_in_one_line_and_keeps_its_last_checkpoint(tmp_path, script, argv):
    """With a learning rate of 1e30 the weights blow up after the first update: A2C's next rollout met NaN logits
    in the action sampler (a traceback before this fix); every script stops in one line with exit 1."""
    result = run(script, *argv, "--total-timesteps", "4000", "--no-progress", "--torch-threads", "1",
                 "--env-threads", "1", "--eval-episodes", "0", "--runs-dir", "out", "--run-name", "d", cwd=tmp_path)
    line = one_error_line(result, 1)
    assert "at agent step" in line and "training stopped" in line and "try a lower --learning-rate" in line
    saved = tmp_path / "out" / "d" / "checkpoint.pt"
    if script == "a2c_atari.py":  # A2C saved after its first update; the NaN showed at the next rollout
        assert "the policy's logits hold NaN or infinity" in line and saved.exists()
    if saved.exists():
        checkpoint = torch.load(saved, weights_only=True)
        assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (tmp_path / "out" / "d" / f"{script[:-3]}.model").exists()


# --- 4. memory larger than the machine ----------------------------------------------------------------------

def test_a_replay_memory_larger_than_the_machine_is_one_line_with_the_largest_that_fits(tmp_path, monkeypatch,
                                                                                         capsys):
    available = harness.available_memory()
    if available is None:
        pytest.skip("no /proc/meminfo here")
    too_big = 2 * available // dqn_atari.ReplayMemory.bytes_per_transition()
    line = main_ends_in_one_line(dqn_atari.main, ["dqn_atari.py", "--buffer-size", str(too_big), "--no-progress"],
                                 tmp_path, monkeypatch, capsys)
    assert line.startswith(f"error: a replay memory of --buffer-size {too_big:,} needs ")
    largest = int(line.rsplit(" ", 1)[1].replace(",", ""))
    assert 0 < largest < too_big // 2


def test_rollouts_larger_than_the_machine_are_one_line(tmp_path, monkeypatch, capsys):
    available = harness.available_memory()
    if available is None:
        pytest.skip("no /proc/meminfo here")
    envs = 2 * available // (5 * 4 * 84 * 84) + 1
    line = main_ends_in_one_line(a2c_atari.main, ["a2c_atari.py", "--num-envs", str(envs), "--total-timesteps",
                                                  str(10 * envs * 5)], tmp_path, monkeypatch, capsys)
    assert line.startswith(f"error: --num-envs {envs} with rollouts of --num-steps 5 needs ") and "fit)" in line


# --- 5. the main command keeps an agent -----------------------------------------------------------------------

@pytest.mark.slow
def test_the_readme_command_leaves_a_model_that_run_replays(tmp_path):
    result = run("ppo_atari.py", "--total-timesteps", "4096", "--run-name", "first", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "first" / "checkpoint.pt").is_file()
    result = run("ppo_atari.py", "--run", "runs/first/ppo_atari.model", "--run-episodes", "1", "--no-video",
                 cwd=tmp_path)
    assert result.returncode == 0 and "over 1 games of BreakoutNoFrameskip-v4" in result.stdout, result.stderr


@pytest.mark.slow
def test_sigterm_to_the_torchrun_launcher_leaves_a_checkpoint(tmp_path):
    """A cluster's stop: SIGTERM to torchrun, which passes it on to its workers; the job stops at its next
    update with a checkpoint that --resume continues."""
    from conftest import interrupt_when_running

    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = interrupt_when_running(launcher[0], [*launcher[1:], os.path.join(ROOT, "ppo_atari.py"), *TINY,
                                                  "--total-timesteps", "1000000", "--runs-dir", "out",
                                                  "--run-name", "t"],
                                    tmp_path / "out" / "t", signal.SIGTERM, cwd=tmp_path, settle_s=8.0)
    assert "stopped by SIGTERM at agent step" in result.stderr and "--resume out/t" in result.stderr
    step = torch.load(tmp_path / "out" / "t" / "checkpoint.pt", weights_only=True)["global_step"]
    assert step > 0 and step % 64 == 0  # whole updates of 2 processes x 2 envs x 16 steps
