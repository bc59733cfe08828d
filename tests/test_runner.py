"""benchmark/run.py: the plan of a run list, each run's state, a real finished + interrupted + resumed
benchmark of tiny PPO runs, the Slurm array file, and one-line errors for a user's mistakes."""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmark"))

import run  # noqa: E402

# Runs of seconds: two updates of 2 envs x 16 steps (64 agent steps), no progress bar, in-process envs.
TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1", "--no-progress",
        "--env-backend", "sync"]
if any("eval_episodes" in (ROOT / f).read_text() for f in ("ppo_atari.py", "harness.py") if (ROOT / f).exists()):
    TINY += ["--eval-episodes", "0"]  # no evaluation games: they would take longer than the training


def write_list(path: Path, seeds=(1, 2), algorithms=("ppo",), budget=64, games=("Breakout",)) -> Path:
    path.write_text(f"algorithms = {json.dumps(list(algorithms))}\ngames = {json.dumps(list(games))}\n"
                    f"seeds = {json.dumps(list(seeds))}\ntotal_timesteps = {budget}\nflags = {json.dumps(TINY)}\n")
    return path


def runner(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmark/run.py", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def last_step(run_dir: Path, tag: str = "charts/SPS") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return sorted(e.step for e in events.Scalars(tag))


def test_plan_is_seed_major_and_checked():
    run_list = {"algorithms": ["ppo", "dqn"], "games": ["Breakout", "Pong"], "seeds": [1, 2], "total_timesteps": 10,
                "flags": ["--x"], "algorithm_flags": {"dqn": ["--y"]}}
    entries = run.plan(run_list, "l", ["dqn", "ppo"], ["Breakout", "Pong"])
    assert [e.name for e in entries[:4]] == ["Breakout__ppo__1", "Breakout__dqn__1", "Pong__ppo__1", "Pong__dqn__1"]
    assert len(entries) == 8 and entries[1].flags == ("--x", "--y") and entries[0].flags == ("--x",)
    assert entries[0].env_id == "BreakoutNoFrameskip-v4" and entries[0].model_file == "ppo_atari.model"
    only_dqn = run.plan(run_list, "l", ["dqn", "ppo"], ["Breakout", "Pong"], only=["dqn"])
    assert [e.algorithm for e in only_dqn] == ["dqn"] * 4
    with pytest.raises(run.UserError, match="unknown game 'Pongg'"):
        run.plan(dict(run_list, games=["Pongg"]), "l", ["dqn", "ppo"], ["Pong"])
    with pytest.raises(run.UserError, match="unknown key 'seed'"):
        run.plan(dict(run_list, seed=1), "l", ["dqn", "ppo"], ["Breakout", "Pong"])
    assert len(run.plan(dict(run_list, games="all"), "l", ["dqn", "ppo"], run.known_games())) == 2 * 57 * 2


def test_ready_made_lists():
    games = run.known_games()
    algorithms = ["a2c", "dqn", "ppo"]  # a2c_atari.py may not exist yet; the lists name it
    sizes = {name: len(run.plan(run.tomllib.loads(run.find_list(name).read_text()), name, algorithms, games))
             for name in ("three_games", "atari5", "atari57", "cpu_2M")}
    assert sizes == {"three_games": 27, "atari5": 45, "atari57": 513, "cpu_2M": 6}


def test_run_states(tmp_path):
    entry = run.Entry("ppo", "Pong", 1, 100)
    run_dir = tmp_path / entry.name
    assert run.run_state(run_dir, entry) == "start"  # nothing yet
    run_dir.mkdir()
    (run_dir / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert run.run_state(run_dir, entry) == "stale"  # events but no checkpoint: killed before its first
    (run_dir / "checkpoint.pt").write_bytes(b"")
    assert run.run_state(run_dir, entry) == "resume"
    (run_dir / "ppo_atari.model").write_bytes(b"")
    run.write_record(run_dir, {"entry": {"total_timesteps": 100}, "exit_status": 0})
    assert run.run_state(run_dir, entry) == "done"
    assert run.run_state(run_dir, run.Entry("ppo", "Pong", 1, 200)) == "resume"  # a larger budget extends it
    run.write_record(run_dir, {"entry": {"total_timesteps": 100}, "exit_status": 137})
    assert run.run_state(run_dir, entry) == "resume"  # a model but a failed last attempt (e.g. in evaluation)
    # a process of this run still alive (its runner was killed): never launched a second time
    alive = subprocess.Popen(["sh", "-c", "sleep 60", entry.name])
    try:
        deadline = time.monotonic() + 10
        while entry.name not in Path(f"/proc/{alive.pid}/cmdline").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has exec'd sh
        attempt = {"host": platform.node(), "pid": alive.pid, "end": None}
        run.write_record(run_dir, {"entry": {"total_timesteps": 100}, "exit_status": None, "attempts": [attempt]})
        assert run.run_state(run_dir, entry) == "running"
    finally:
        alive.kill()
        alive.wait()
    assert run.run_state(run_dir, entry) == "resume"  # gone: resumed from its checkpoint


@pytest.mark.slow
def test_finished_run_skipped_interrupted_run_resumed(tmp_path):
    """Seed 1 finishes under the runner; seed 2 is left as an interrupted run leaves it (a checkpoint at 32
    of its 64 agent steps, no model); the runner then skips seed 1 and resumes seed 2 to 64."""
    run_list, runs = write_list(tmp_path / "tiny.toml"), tmp_path / "runs"
    done_dir, resumed_dir = runs / "Breakout__ppo__1", runs / "Breakout__ppo__2"
    # Seed 2 trains to 32 agent steps beside the runner's seed 1 (two processes: the test takes half the time)
    interrupted = subprocess.Popen([sys.executable, "ppo_atari.py", "--env-id", "BreakoutNoFrameskip-v4", "--seed", "2",
                                    "--total-timesteps", "32", "--save-model", "--run-name", resumed_dir.name,
                                    "--runs-dir", str(runs), *TINY], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
    first = runner(run_list, "--runs-dir", runs, "--index", "0")
    assert interrupted.wait(timeout=300) == 0, interrupted.stderr.read()
    assert first.returncode == 0, first.stdout + first.stderr
    record = json.loads((done_dir / "run.json").read_text())
    assert record["exit_status"] == 0 and record["settings"]["total_timesteps"] == 64
    assert record["entry"]["seed"] == 1 and record["attempts"][0]["end"] is not None
    assert record["attempts"][0]["commit"] != ""
    assert "--save-model --run-name Breakout__ppo__1" in record["attempts"][0]["command"]
    assert not resumed_dir.joinpath("run.json").exists()  # --index 0 ran seed 1 only
    done_record, done_model = (done_dir / "run.json").read_bytes(), (done_dir / "ppo_atari.model").stat().st_mtime_ns
    (resumed_dir / "ppo_atari.model").unlink()  # now as an interrupted run leaves it: a checkpoint, no model
    assert run.run_state(resumed_dir, run.Entry("ppo", "Breakout", 2, 64)) == "resume"

    second = runner(run_list, "--runs-dir", runs)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 run(s)" in second.stdout and "1 done (skipped), 1 to resume, 0 to start" in second.stdout
    assert "[2/2 done, 0 failed, 0 running] Breakout__ppo__2: finished" in second.stdout
    assert (done_dir / "run.json").read_bytes() == done_record  # not relaunched: record and model untouched
    assert (done_dir / "ppo_atari.model").stat().st_mtime_ns == done_model
    record = json.loads((resumed_dir / "run.json").read_text())
    (attempt,) = record["attempts"]
    assert attempt["command"] == f"python ppo_atari.py --resume {runs / resumed_dir.name} --total-timesteps 64"
    assert attempt["exit_status"] == 0 and record["exit_status"] == 0 and record["settings"]["total_timesteps"] == 64
    assert (resumed_dir / "ppo_atari.model").exists()
    # one update of 32 agent steps by the first process, the second by the resumed one: the steps continue
    assert last_step(resumed_dir) == [32, 64]
    assert "python ppo_atari.py --resume" in (resumed_dir / "console.log").read_text()


def test_slurm_array_file(tmp_path, capsys):
    run_list = write_list(tmp_path / "tiny.toml", seeds=(1, 2, 3))
    assert run.main([str(run_list), "--runs-dir", str(tmp_path / "runs"), "--slurm", "--parallel", "2"]) == 0
    path = tmp_path / "runs" / "tiny.sbatch"
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and f"sbatch {path}" in out
    script = path.read_text()
    assert "#SBATCH --array=0-2%2\n" in script  # three runs, at most two at once
    assert f'benchmark/run.py {run_list} --runs-dir {tmp_path / "runs"} --index "$SLURM_ARRAY_TASK_ID"' in script
    assert script.startswith("#!/bin/bash\n") and f"cd {ROOT}\n" in script


@pytest.mark.parametrize("argv, message", [
    (["no_such_list"], "error: unknown run list 'no_such_list'"),
    (["BAD_ALGO"], "error: unknown algorithm 'foo'"),
    (["LIST", "--parallel", "0"], "error: --parallel must be at least 1"),
    (["LIST", "--parallel", "x"], "error: argument --parallel: invalid int value"),
    (["LIST", "--runs-dir", "FILE/runs"], "error: cannot write in the runs directory"),
    (["LIST", "--index", "5"], "error: --index 5 is outside the plan"),
])
def test_mistakes_end_in_one_line_and_exit_2(tmp_path, capsys, argv, message):
    good, bad = write_list(tmp_path / "tiny.toml"), write_list(tmp_path / "bad.toml", algorithms=("foo",))
    (tmp_path / "FILE").write_text("")  # a file where a directory should be: unwritable even for root
    argv = [{"LIST": str(good), "BAD_ALGO": str(bad)}.get(a, a.replace("FILE", str(tmp_path / "FILE"))) for a in argv]
    argv += ["--runs-dir", str(tmp_path / "runs")] if "--runs-dir" not in argv else []
    try:
        status = run.main(argv)
    except SystemExit as e:  # argparse's own errors, made one line by run.Parser
        status = e.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_mistake_exits_2_without_traceback_as_a_process():
    result = runner("no_such_list")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown run list")
    assert "Traceback" not in result.stderr

