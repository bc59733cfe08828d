"""Tests of harness.py, the run around every algorithm: settings and their checks, files, random streams,
evaluation, --run random, a NaN loss, torchrun across two launchers, and the log schema of every script."""

from __future__ import annotations

import dataclasses
import glob
import os
import random
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import harness  # noqa: E402
from conftest import main_ends_in_one_line, scalars  # noqa: E402
import ppo_atari  # noqa: E402
import pqn_atari  # noqa: E402

PPO = os.path.join(ROOT, "ppo_atari.py")
# Two updates of 2 envs x 16 steps, one epoch of 2 minibatches, no evaluation: every code path, in seconds.
TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
        "--total-timesteps", "64", "--no-progress", "--torch-threads", "1", "--env-threads", "1",
        "--eval-episodes", "0"]
# Each script for 640 agent steps on 2 envs (DQN: 1), long enough for random Breakout games (125-230 agent
# steps each) to end, so that every tag has something to say.
SCHEMA_RUNS = {
    "ppo_atari.py": [*TINY, "--total-timesteps", "640"],
    # epsilon 1 throughout: an untrained greedy DQN never serves in Breakout, so no game would end
    "dqn_atari.py": ["--total-timesteps", "640", "--buffer-size", "1000", "--learning-starts", "100", "--end-e", "1",
                     "--no-progress", "--torch-threads", "1", "--env-threads", "1"],
    "a2c_atari.py": ["--num-envs", "2", "--num-steps", "5", "--total-timesteps", "640", "--no-progress",
                     "--torch-threads", "1", "--env-threads", "1"],
    # epsilon 1 throughout, as DQN's
    "pqn_atari.py": [*TINY, "--total-timesteps", "640", "--end-e", "1"],
}


def run(argv, cwd, script=PPO, check=True, env=None, timeout=300):
    result = subprocess.run([sys.executable, script, *argv], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def tags(run_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return set(EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload().Tags()["scalars"])


# --- settings -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Settings:
    lr: float | None = 1.0
    gamma: float = 0.5
    steps: int = 1
    sticky: float = 0.0


@pytest.mark.parametrize("changes, message", [
    ({"lr": float("nan")}, "--lr must be a finite number above 0, got nan"),
    ({"lr": -1.0}, "--lr must be a finite number above 0, got -1.0"),
    ({"lr": float("inf")}, "--lr must be a finite number above 0, got inf"),
    ({"gamma": 2.0}, "--gamma must be in [0, 1], got 2.0"),
    ({"gamma": float("nan")}, "--gamma must be in [0, 1], got nan"),
    ({"steps": 0}, "--steps must be at least 1, got 0"),
    ({"sticky": 1.0}, "--sticky must be in [0, 1), got 1.0"),
])
def test_check_range_names_the_flag_and_the_range(changes, message, capsys):
    with pytest.raises(SystemExit) as stop:
        harness.check_range(Settings(**changes), positive=("lr",), unit_interval=("gamma",), at_least_one=("steps",),
                            probability=("sticky",))
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_check_range_passes_good_values_and_skips_none():
    harness.check_range(Settings(lr=None, gamma=1.0), positive=("lr",), unit_interval=("gamma",),
                        at_least_one=("steps",), probability=("sticky",))


def test_resume_takes_only_the_resumable_flags_from_the_command_line(tmp_path, monkeypatch):
    saved = dict(dataclasses.asdict(ppo_atari.Args(learning_rate=1e-3, total_timesteps=100, bf16=False)),
                 retired_setting=3)  # a setting an older version had
    del saved["eval_every"]  # a setting an older version lacked
    torch.save(dict(harness.model_file(ppo_atari.Args(), "ppo", ppo_atari.Agent(4), 4), args=saved),
               tmp_path / "checkpoint.pt")
    monkeypatch.setattr(sys, "argv", ["ppo_atari.py", "--resume", str(tmp_path), "--learning-rate", "5",
                                      "--total-timesteps", "200", "--bf16", "--eval-every", "7"])
    args, checkpoint = harness.parse(ppo_atari.Args, algo="ppo")
    assert args.learning_rate == 1e-3  # what is learned comes from the checkpoint
    assert (args.total_timesteps, args.bf16, args.eval_every) == (200, True, 7)  # how long and how fast: typed
    assert checkpoint["algo"] == "ppo"


def test_a_preset_sets_what_it_names_and_a_typed_flag_wins(monkeypatch):
    fast = pqn_atari.Args.PRESETS["fast"]
    monkeypatch.setattr(sys, "argv", ["pqn_atari.py", "--preset", "fast", "--num-envs=64", "--gamma", "0.9"])
    args, _ = harness.parse(pqn_atari.Args, algo="pqn")
    assert args.num_envs == 64 and args.gamma == 0.9  # typed, in either spelling
    assert all(getattr(args, name) == value for name, value in fast.items() if name != "num_envs")
    monkeypatch.setattr(sys, "argv", ["pqn_atari.py"])
    assert harness.parse(pqn_atari.Args, algo="pqn")[0] == pqn_atari.Args()  # the published defaults, untouched


def test_a_resumed_run_keeps_the_preset_it_began_with(tmp_path, monkeypatch, capsys):
    began = pqn_atari.Args(preset="fast", **pqn_atari.Args.PRESETS["fast"])
    torch.save(dict(harness.model_file(began, "pqn", pqn_atari.QNetwork(4), 4), args=dataclasses.asdict(began)),
               tmp_path / "checkpoint.pt")
    monkeypatch.setattr(sys, "argv", ["pqn_atari.py", "--resume", str(tmp_path), "--preset", "cleanrl"])
    args, _ = harness.parse(pqn_atari.Args, algo="pqn")
    assert dataclasses.replace(args, resume=None) == began
    assert "--preset ignored" in capsys.readouterr().err


def test_the_help_of_a_preset_states_its_values():
    out = subprocess.run([sys.executable, "pqn_atari.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, COLUMNS="400")).stdout
    preset = " ".join(out.split("--preset", 1)[1].split("│ --", 1)[0].replace("│", " ").split())  # up to the next flag
    stated = dict(re.findall(r"(--[a-z-]+) (\d+(?:\.\d+)?)", preset))
    assert stated == {harness.flag(name): str(value) for name, value in pqn_atari.Args.PRESETS["fast"].items()}


def written(path, data):
    """Write `data` (bytes, or a dict for torch.save) to `path` and return the path."""
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        torch.save(data, path)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.pt", "does not exist"),
    (lambda d: written(d / "junk.pt", b"junk"), "cannot read"),
    (lambda d: written(d / "q.pt", {"format": 1, "model": {}, "algo": "dqn"}), "use dqn_atari.py"),
    (lambda d: written(d / "old.pt", {"format": 0, "model": {}}), "no format-1"),
])
def test_load_file_refuses_in_one_line(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit) as stop:
        harness.load_file(str(make(tmp_path)), "model file", "ppo")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_model_file_loads_without_running_code(tmp_path):
    data = harness.model_file(ppo_atari.Args(), "ppo", ppo_atari.Agent(4), 4)
    torch.save(data, tmp_path / "a.model")
    loaded = torch.load(tmp_path / "a.model", weights_only=True)  # plain types only: no code can run on load
    assert loaded["algo"] == "ppo" and loaded["num_actions"] == 4 and loaded["format"] == harness.MODEL_FORMAT


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_save_atomic_on_a_real_full_or_read_only_filesystem_is_one_line_and_keeps_the_old_file(
        small_filesystem, fault, capsys):
    """A checkpoint of 2 MB onto a real 1 MiB tmpfs that already holds the previous one, or onto one remounted
    read-only: one line, exit status 2, the previous file unchanged and no .tmp left."""
    path = small_filesystem / "checkpoint.pt"
    torch.save({"old": torch.ones(1000)}, path)
    if fault == "read-only":
        small_filesystem.remount_read_only()
    with pytest.raises(SystemExit) as stop:
        harness.save_atomic({"new": torch.zeros(500_000)}, str(path))
    assert stop.value.code == 2
    assert torch.equal(torch.load(path, weights_only=True)["old"], torch.ones(1000))
    assert os.listdir(small_filesystem) == ["checkpoint.pt"]
    line, = capsys.readouterr().err.strip().splitlines()
    reason = "No space left on device" if fault == "full" else "Read-only file system"
    assert line.startswith(f"error: cannot write '{path}' ({reason})") and "unchanged" in line


def test_save_replay_on_a_real_full_filesystem_is_one_line_and_keeps_the_old_file(small_filesystem, capsys):
    path = small_filesystem / "replay.npz"
    harness.save_replay({"frames": np.ones(10, np.uint8)}, 5, str(path))
    with pytest.raises(SystemExit) as stop:
        harness.save_replay({"frames": np.zeros(2_000_000, np.uint8)}, 9, str(path))
    assert stop.value.code == 2 and os.listdir(small_filesystem) == ["replay.npz"]
    assert harness.load_replay(str(path), 5)["frames"].tolist() == [1] * 10
    assert "No space left on device" in capsys.readouterr().err


def test_isolated_rng_leaves_every_stream_where_it_was():
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    with harness.isolated_rng(99):
        inside = (random.random(), np.random.rand(), torch.rand(1).item())
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    with harness.isolated_rng(99):
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == inside  # seeded: repeatable


def test_importing_a_script_changes_nothing_in_the_process():
    code = ("import os, signal, torch; handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]; "
            "threads = torch.get_num_threads(); import ppo_atari, a2c_atari, dqn_atari, pqn_atari; "
            "print(threads == torch.get_num_threads(), handlers == [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout
    assert out.split() == ["True", "True"]


# --- bad input common to every script ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--total-timesteps", "0"], "--total-timesteps must be at least 1"),
    (["--repeat-action-probability", "1.5"], "--repeat-action-probability must be in [0, 1)"),
    (["--eval-episodes", "-1"], "--eval-episodes must be a finite number of at least 0"),
    (["--eval-every", "0"], "--eval-every must be at least 1"),
    (["--runs-dir", "a_file/runs"], "is a file"),
    (["--runs-dir", "a_file"], "is a file"),
])
def test_bad_shared_settings_end_in_one_line_before_anything_starts(tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "a_file").write_text("not a directory")
    line = main_ends_in_one_line(ppo_atari.main, ["ppo_atari.py", *TINY, *argv], tmp_path, monkeypatch, capsys)
    assert message in line


@pytest.mark.slow
def test_compile_without_a_cpp_compiler_ends_in_one_line_before_anything_starts(tmp_path):
    (tmp_path / "bin").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env["PATH"] = str(tmp_path / "bin")  # no g++, c++ or clang++ to be found
    result = run([*TINY, "--compile"], cwd=tmp_path, check=False, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--compile needs a C++ compiler" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


# --- a loss that is no longer finite ------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    # ppo_loss returns NaN from its third call on: the second update (agent steps 33-64) goes bad after the
    # checkpoint at agent step 32 was written.
    code = (
        "import sys, ppo_atari\n"
        "real, calls = ppo_atari.ppo_loss, [0]\n"
        "def poisoned(*a, **k):\n"
        "    calls[0] += 1\n"
        "    loss, stats = real(*a, **k)\n"
        "    return (loss * float('nan') if calls[0] > 2 else loss), stats\n"
        "ppo_atari.ppo_loss = poisoned\n"
        f"sys.argv = ['ppo_atari.py', *{TINY!r}, '--save-model', '--checkpoint-every', '32', '--runs-dir', 'out',"
        " '--run-name', 'n']\n"
        "ppo_atari.main()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: the loss is nan at agent step 64: training stopped")
    assert "agent step 32) is unchanged" in lines[0]
    checkpoint = torch.load(tmp_path / "out" / "n" / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 32
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (tmp_path / "out" / "n" / "ppo_atari.model").exists()


# --- evaluation ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluation_logs_whole_games_on_schedule_and_changes_nothing_learned(tmp_path):
    run([*TINY, "--runs-dir", "out", "--run-name", "plain"], cwd=tmp_path)
    run([*TINY, "--eval-every", "32", "--eval-episodes", "2", "--eval-video", "--runs-dir", "out", "--run-name", "e"],
        cwd=tmp_path)
    evals = scalars(tmp_path / "out" / "e", "eval/episodic_return")
    assert [step for step, _ in evals] == [32, 32, 64, 64]  # every --eval-every steps; the end is step 64 too
    assert all(score >= 0 and score == int(score) for _, score in evals)  # raw Breakout scores of whole games
    assert scalars(tmp_path / "out" / "plain", "eval/episodic_return") == []
    for tag in ("losses/policy_loss", "losses/value_loss", "losses/entropy"):
        assert scalars(tmp_path / "out" / "e", tag) == scalars(tmp_path / "out" / "plain", tag), tag
    videos = sorted(p.name for p in (tmp_path / "out" / "e" / "videos").iterdir())
    assert videos == ["eval_32.mp4", "eval_64.mp4"]


def test_evaluate_plays_the_asked_number_of_whole_games():
    args = ppo_atari.Args(env_id="PongNoFrameskip-v4")
    calls = []

    def always_noop(obs):
        calls.append(len(obs))
        return np.zeros(len(obs), dtype=np.int64)

    scores = harness.evaluate(args, always_noop, episodes=2, seed=5, env_threads=1)
    # A player who never moves loses Pong 0-21: the raw score of a whole game, over every life and point.
    assert scores == [-21.0, -21.0] and set(calls) == {2}


# --- --run random ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_random_plays_whole_games_and_writes_the_video(tmp_path):
    result = run(["--run", "random", "--run-episodes", "2", "--env-id", "breakout"], cwd=tmp_path)
    lines = result.stdout.splitlines()
    games = [line for line in lines if line.startswith("game ")]
    assert [g.split(":")[0] for g in games] == ["game 1", "game 2"]
    scores = [float(g.split("score ")[1].split()[0]) for g in games]
    assert f"mean {np.mean(scores):.2f} +- {np.std(scores):.2f} (std) over 2 games of breakout" in lines
    assert (tmp_path / "videos" / "random_breakout.mp4").stat().st_size > 0
    again = run(["--run", "random", "--run-episodes", "2", "--env-id", "breakout", "--no-video"], cwd=tmp_path)
    assert [g for g in again.stdout.splitlines() if g.startswith("game ")] == games  # one seed, same games


# --- torchrun across nodes ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_with_a_c10d_rendezvous_train_one_job(tmp_path):
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launchers = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                          "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                          "--rdzv-id", "test", PPO, *TINY, "--total-timesteps", "128", "--save-model", "--runs-dir",
                          f"node{node}", "--run-name", "job"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for node in (0, 1)]
    results = [p.communicate(timeout=300) for p in launchers]
    for p, (_, err) in zip(launchers, results):
        assert p.returncode == 0, err[-3000:]
    # One job: 2 ranks x 2 envs x 16 steps = 64 agent steps per update; rank 0 alone writes its files.
    written = [node for node in (0, 1) if (tmp_path / f"node{node}" / "job").exists()]
    assert len(written) == 1
    run_dir = tmp_path / f"node{written[0]}" / "job"
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [64, 128]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128 and len(checkpoint["rng"]) == 2


# --- the log schema -------------------------------------------------------------------------------------------

COMMON_TAGS = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
               "time/env", "time/inference", "time/update", "time/eval", "eval/episodic_return"}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCHEMA_RUNS))
def test_every_script_writes_the_common_tags(tmp_path, script):
    run([*SCHEMA_RUNS[script], "--eval-episodes", "1", "--runs-dir", "out", "--run-name", "s"], cwd=tmp_path,
        script=os.path.join(ROOT, script))
    written = tags(tmp_path / "out" / "s")
    assert COMMON_TAGS <= written, COMMON_TAGS - written
    assert any(t.startswith("losses/") for t in written)


@pytest.mark.parametrize("channels_last", [True, False])
def test_frame_buffer_slices_and_gathered_minibatches_hold_the_frames_in_the_network_layout(channels_last):
    buffer = harness.frame_buffer((3, 4, 4, 6, 5), channels_last, torch.device("cpu"))
    assert buffer.shape == (3, 4, 4, 6, 5) and buffer.dtype == torch.uint8 and not buffer.any()
    frames = torch.randint(0, 256, (12, 4, 6, 5), dtype=torch.uint8)
    for step in range(3):
        buffer[step] = frames[4 * step : 4 * step + 4]  # one step of every env, as the rollout stores it
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert buffer[1].is_contiguous(memory_format=layout)  # what the rollout's forward pass reads
    flat = buffer.reshape(-1, 4, 6, 5)
    assert flat.data_ptr() == buffer.data_ptr(), "the minibatch source must be a view, not a copy per update"
    assert torch.equal(flat, frames)
    index = torch.tensor([11, 0, 5, 5, 7])
    minibatch = harness.gather_frames(flat, index)
    assert torch.equal(minibatch, frames[index]) and minibatch.is_contiguous(memory_format=layout)


@pytest.mark.slow
@pytest.mark.skipif(harness.cpp_compiler() is None,
                    reason="TorchInductor needs a C++ compiler; without one --compile stops in one line (tested above)")
def test_compile_compiles_the_network_and_saves_a_model_that_the_eager_network_loads(tmp_path, monkeypatch):
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ppo_atari.py", *TINY, "--compile", "--save-model", "--run-name", "c",
                                      "--no-flush-denormal"])
    threads = torch.get_num_threads()
    try:
        ppo_atari.main()
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    assert graphs >= 1, "--compile ran the network eagerly"
    model = glob.glob(str(tmp_path / "runs" / "c" / "*.model"))
    assert len(model) == 1
    saved = torch.load(model[0], weights_only=True)
    ppo_atari.Agent(saved["num_actions"]).load_state_dict(saved["model"])  # strict: no _orig_mod. prefixes


# --- the loop's calls at the end of an iteration, in any order ---------------------------------------------------

def end_of_iteration(run, step: int, final: bool, order: str) -> bool:
    """The end of one iteration of a training loop, as a copy of a script might write it; True: break."""
    if order == "stop, then checkpoint":
        stop = run.should_stop(step)
        if run.checkpoint_due(step, final):
            run.save_checkpoint(step, iteration=step)
        return stop
    if order == "checkpoint, then stop":
        if run.checkpoint_due(step, final):
            run.save_checkpoint(step, iteration=step)
        return run.should_stop(step)
    if order == "no should_stop":
        if run.checkpoint_due(step, final):
            run.save_checkpoint(step, iteration=step)
        return False
    assert order == "no checkpoint_due"
    return run.should_stop(step)


@pytest.mark.parametrize("order", ["stop, then checkpoint", "checkpoint, then stop", "no should_stop",
                                   "no checkpoint_due"])
def test_a_stop_leaves_a_checkpoint_whatever_the_order_of_the_loops_calls(tmp_path, order, capsys):
    """A real SIGTERM at step 3 of 8 with --save-model: whichever order the loop asks checkpoint_due and
    should_stop in, the checkpoint holds the step where the loop stopped; a loop that never saves the
    checkpoint it is asked for fails loudly in finish() instead of ending quietly without one."""
    import signal

    args = harness.RunArgs(runs_dir=str(tmp_path), run_name="r", save_model=True, checkpoint_every=10**6,
                           eval_episodes=0, progress=False)
    proc = harness.Process(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), torch_threads=1,
                           inference_threads=1, env_threads=1, seed=1,
                           autocast=torch.autocast("cpu", enabled=False))
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run = harness.Run(args, proc, "ppo", model, optimizer, None, total_steps=8, num_actions=2)
        for step in range(1, 9):
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # the real signal, handled by the run's StopRequest
            if end_of_iteration(run, step, final=step == 8, order=order):
                break
        if order == "no checkpoint_due":
            with pytest.raises(RuntimeError, match="checkpoint_due"):
                run.finish(step, act=None)
            assert not (tmp_path / "r" / "checkpoint.pt").exists()
            return
        with pytest.raises(SystemExit) as stopped:
            run.finish(step, act=None)
            raise SystemExit(0)  # a run that was not stopped ends normally
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    saved = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    if order == "no should_stop":  # the loop never stops early: it saves at every step after the signal
        assert stopped.value.code == 0 and saved["global_step"] == 8
    else:
        assert stopped.value.code == 128 + signal.SIGTERM and saved["global_step"] == saved["iteration"] == 3
        assert "continue with --resume" in capsys.readouterr().err
