"""Tests of dqn_atari.py: the replay memory, the maths, the presets, and tiny end-to-end runs."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from conftest import main_ends_in_one_line  # noqa: E402
import dqn_atari  # noqa: E402
import harness  # noqa: E402
from dqn_atari import ReplayMemory, linear_schedule, td_target  # noqa: E402

SCRIPT = os.path.join(ROOT, "dqn_atari.py")
# "--run_name", not "--run-name": benchmarks pause the long background runs with
# `pkill -STOP -f -- '--run-name'`, which must not freeze these tests' runs too.
RUN_NAME = "--run_name"
TINY = ["--total-timesteps", "200", "--buffer-size", "1000", "--learning-starts", "100", "--eval-episodes", "0",
        "--no-progress", "--torch-threads", "1", "--end-e", "0.5"]


# --- the replay memory against a fake vector env with known frames -----------------------------------------

def frame_of(env: int, t: int) -> np.ndarray:
    """A frame that names its env and its step in its first pixels, with every other pixel non-zero."""
    frame = np.full((84, 84), 7, dtype=np.uint8)
    frame[0, 0], frame[0, 1], frame[0, 2] = t % 256, t // 256, env + 1
    return frame


class FakeVectorEnv:
    """Games of random lengths with life losses, game overs and truncations, under NEXT_STEP autoreset.

    Keeps the true frame stack of every env, zero-padded at reset as the real env does, and the list of
    true transitions (obs, action, reward, terminated, next_obs) that a replay memory must reproduce.
    """

    def __init__(self, num_envs: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.num_envs, self.t = num_envs, 0
        self.stacks = [collections.deque([np.zeros((84, 84), np.uint8)] * 4, maxlen=4) for _ in range(num_envs)]
        self.reset_next = np.zeros(num_envs, dtype=bool)
        self.transitions: dict[tuple[int, int], tuple] = {}  # (env, step of obs' newest frame) -> transition
        self.truncations: set[tuple[int, int]] = set()  # keys of the transitions cut by the time limit

    def obs(self) -> np.ndarray:
        return np.stack([np.stack(s) for s in self.stacks])

    def reset(self) -> np.ndarray:
        for e in range(self.num_envs):
            self.stacks[e].append(frame_of(e, self.t))
        return self.obs()

    def step(self, actions: np.ndarray):
        old = self.obs()
        self.t += 1
        rewards = self.rng.choice([-1.0, 0.0, 1.0], size=self.num_envs).astype(np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        game_over = np.zeros(self.num_envs, dtype=bool)
        for e in range(self.num_envs):
            if self.reset_next[e]:  # reset step: a new game, zero-padded stack, no transition
                self.stacks[e].extend([np.zeros((84, 84), np.uint8)] * 3)
                self.stacks[e].append(frame_of(e, self.t))
                rewards[e] = 0.0
                continue
            self.stacks[e].append(frame_of(e, self.t))
            u = self.rng.random()
            if u < 0.05:
                terminated[e] = game_over[e] = True
            elif u < 0.08:
                truncated[e] = True
            elif u < 0.15:
                terminated[e] = True  # a life lost: the game and its stack go on
        new = self.obs()
        for e in range(self.num_envs):
            if not self.reset_next[e]:
                self.transitions[(e, self.t - 1)] = (old[e], int(actions[e]), rewards[e], terminated[e], new[e])
                if truncated[e]:
                    self.truncations.add((e, self.t - 1))
        reset_step = self.reset_next.copy()
        self.reset_next = game_over | truncated
        return new, rewards, terminated, truncated, reset_step


def fill(memory: ReplayMemory, env: FakeVectorEnv, steps: int, num_actions: int = 6) -> None:
    """Drive the memory exactly as dqn_atari.main does."""
    obs = env.reset()
    memory.add_observation(obs[:, -1], game_start=np.ones(env.num_envs, dtype=bool))
    for _ in range(steps):
        actions = np.random.randint(num_actions, size=env.num_envs)
        obs, rewards, terminated, truncated, reset_step = env.step(actions)
        memory.add(actions, rewards, terminated, obs[:, -1], reset_step=reset_step)


def check_samples(memory: ReplayMemory, env: FakeVectorEnv, oldest_step: int, draws: int = 40) -> set:
    """Every sampled transition must be a true one, exactly, and still held; returns the ones seen."""
    seen = set()
    for _ in range(draws):
        frames, actions, rewards, terminated = memory.sample(64)
        for b in range(len(frames)):
            newest = frames[b, 3]
            key = (int(newest[0, 2]) - 1, int(newest[0, 0]) + 256 * int(newest[0, 1]))
            assert key in env.transitions, f"sampled {key}: not a transition (a reset step or unwritten slot)"
            obs, action, reward, term, next_obs = env.transitions[key]
            assert key[1] >= oldest_step, f"sampled {key}, older than the memory holds"
            np.testing.assert_array_equal(frames[b, :4], obs)
            np.testing.assert_array_equal(frames[b, 1:], next_obs)
            assert (actions[b], rewards[b], terminated[b]) == (action, reward, term)
            seen.add(key)
    return seen


@pytest.mark.parametrize("num_envs", [1, 3])
def test_replay_rebuilds_stacks_across_game_boundaries(num_envs):
    np.random.seed(0)
    env = FakeVectorEnv(num_envs, seed=1)
    memory = ReplayMemory(capacity=400 * num_envs, num_envs=num_envs)
    fill(memory, env, steps=300)  # no wrap-around yet
    seen = check_samples(memory, env, oldest_step=0)
    game_starts = sum(1 for (e, t) in seen if not env.transitions[(e, t)][0][0].any())
    assert game_starts > 0, "no transition from the first frame of a game was sampled"
    # A truncated game's last transition is kept, bootstraps (terminated False) from the game's last
    # observation, and the next game's first observation never appears as its s'.
    truncations = seen & env.truncations
    assert truncations, "no truncated transition was sampled; the test proves nothing about them"
    assert not any(env.transitions[key][3] for key in truncations)
    assert len({e for e, _ in seen}) == num_envs


@pytest.mark.parametrize("num_envs", [1, 2])
def test_replay_wraps_around_without_stale_or_invalid_samples(num_envs):
    np.random.seed(0)
    env = FakeVectorEnv(num_envs, seed=2)
    memory = ReplayMemory(capacity=50 * num_envs, num_envs=num_envs)
    fill(memory, env, steps=237)  # 237 + 1 frames written per env into 50 slots: wrapped 4 times
    # The oldest slot holds the frame of step 238 - 50 = 188; a transition needs its 3 previous frames.
    seen = check_samples(memory, env, oldest_step=188 + 3)
    newest_step = 237
    assert all(t < newest_step for _, t in seen), "sampled the newest observation, whose step is not played"
    assert {t for _, t in seen} >= {t for (e, t) in env.transitions if 191 <= t < 237}


def test_replay_never_samples_a_reset_step():
    np.random.seed(0)
    env = FakeVectorEnv(1, seed=3)
    memory = ReplayMemory(capacity=60, num_envs=1)
    fill(memory, env, steps=45)
    untaken = np.flatnonzero(~memory.taken[0, : memory.cursor - 1])
    assert len(untaken) > 0, "the fake games ended nowhere; the test proves nothing"
    for _ in range(200):
        memory.sample(32)  # check_samples asserts the content; here, many draws of the rare bad slots
    check_samples(memory, env, oldest_step=0, draws=200)


def test_replay_bytes_per_transition_and_capacity():
    memory = ReplayMemory(capacity=1000, num_envs=4)
    stored = sum(getattr(memory, name).nbytes for name in ReplayMemory.ARRAYS)
    assert stored / 1000 == ReplayMemory.bytes_per_transition()
    assert ReplayMemory.bytes_per_transition() <= 84 * 84 + 16
    assert ReplayMemory.bytes_per_transition() * 1_000_000 <= 8e9  # 1M transitions within 8 GB


@pytest.mark.parametrize("steps, slots_in_file", [(20, 21), (80, 50)])  # before and after the rings wrap
def test_replay_state_round_trip(tmp_path, steps, slots_in_file):
    np.random.seed(0)
    env = FakeVectorEnv(2, seed=4)
    memory = ReplayMemory(capacity=100, num_envs=2)
    fill(memory, env, steps=steps)
    harness.save_replay(memory.state(), 2 * steps, str(tmp_path / "replay.npz"))
    restored = ReplayMemory(capacity=100, num_envs=2)
    restored.frames[:] = 7  # leftovers that a load must not keep
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as state:
        assert int(state["global_step"]) == 2 * steps
        assert state["frames"].shape == (2, slots_in_file, 84, 84)  # only written slots go to the file
        restored.load_state(state)
    for name in ReplayMemory.ARRAYS:  # the same arrays, unwritten slots zero: no leftovers
        np.testing.assert_array_equal(getattr(memory, name), getattr(restored, name), err_msg=name)
    # Both memories go on with the same steps, then draw the same minibatches: the restored one is the same
    # memory, across the wrap-around too.
    for m in (memory, restored):
        np.random.seed(3)
        fill(m, FakeVectorEnv(2, seed=9), steps=40)
    for name in ReplayMemory.ARRAYS:
        np.testing.assert_array_equal(getattr(memory, name), getattr(restored, name), err_msg=name)
    np.random.seed(5)
    a = [x.copy() for x in memory.sample(16)]
    np.random.seed(5)
    b = restored.sample(16)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# --- the maths ---------------------------------------------------------------------------------------------

def test_td_target_by_hand():
    rewards = torch.tensor([1.0, 0.0, -1.0])
    # Transition 1 ends in a terminal state (life lost); transition 2 was truncated, so it is stored with
    # terminated False and bootstraps from its next observation.
    terminated = torch.tensor([False, True, False])
    next_q_target = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
    y = td_target(rewards, next_q_target, terminated, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 2.0, 0.0, -1.0 + 0.9 * 5.0]))
    # Double DQN: the online network picks actions 1, 0, 1, the target network values them.
    next_q_online = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = td_target(rewards, next_q_target, terminated, gamma=0.9, next_q_online=next_q_online)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 2.0, 0.0, -1.0 + 0.9 * -6.0]))


def test_td_loss_huber_clips_the_gradient():
    q = torch.tensor([0.0, 0.0], requires_grad=True)
    dqn_atari.td_loss(q, torch.tensor([0.5, 3.0]), "huber").backward()
    torch.testing.assert_close(q.grad, torch.tensor([-0.5, -1.0]) / 2)  # error 0.5 as is, error 3 clipped to 1


def test_epsilon_schedule_end_points():
    assert linear_schedule(1.0, 0.01, 1000, 0) == 1.0
    assert linear_schedule(1.0, 0.01, 1000, 1000) == pytest.approx(0.01)
    assert linear_schedule(1.0, 0.01, 1000, 10_000) == pytest.approx(0.01)
    assert linear_schedule(1.0, 0.0, 1000, 250) == pytest.approx(0.75)
    assert linear_schedule(1.0, 0.1, 0, 0) == 0.1


def test_exploration_is_a_tenth_of_the_run_unless_given():
    assert dqn_atari.exploration_duration(None, 2_000_000) == 200_000  # CleanRL's exploration_fraction 0.1
    assert dqn_atari.exploration_duration(None, 10_000_000) == 1_000_000
    assert dqn_atari.exploration_duration(5_000, 2_000_000) == 5_000


def test_the_nature_preset_sets_its_values_and_a_typed_flag_wins(monkeypatch):
    nature = dqn_atari.Args.PRESETS["nature"]
    monkeypatch.setattr(sys, "argv", ["dqn_atari.py", "--preset", "nature", "--learning-rate", "1e-3",
                                      "--end-e=0.2"])
    args, _ = harness.parse(dqn_atari.Args, algo="dqn")
    # every value of the preset, except the two typed, and every other setting at its default
    assert args == dqn_atari.Args(**{**nature, "preset": "nature", "learning_rate": 1e-3, "end_e": 0.2})
    monkeypatch.setattr(sys, "argv", ["dqn_atari.py", "--preset", "nature"])
    args, _ = harness.parse(dqn_atari.Args, algo="dqn")
    assert {name: getattr(args, name) for name in nature} == nature


def old_checkpoint(tmp_path, **changes) -> dict:
    """The args of a checkpoint written before the presets' values were the flags' defaults: those of the
    committed DQN Pong 1M run (--preset cleanrl, --exploration-steps 250000 typed, the other six None)."""
    model = torch.load(os.path.join(ROOT, "benchmark", "results", "dqn_pong_1M_run", "dqn_atari.model"),
                       weights_only=True)
    old = dict(model["args"], **changes)
    torch.save(dict(model, args=old, global_step=1_000_000), tmp_path / "checkpoint.pt")
    return old


@pytest.mark.parametrize("preset, exploration_steps, used", [
    ("cleanrl", 250_000, dict(optimizer="adam", learning_rate=1e-4, loss="mse", target_network_frequency=1_000,
                              end_e=0.01, exploration_steps=250_000, learning_starts=80_000)),
    ("nature", None, dict(optimizer="rmsprop", learning_rate=2.5e-4, loss="huber", target_network_frequency=10_000,
                          end_e=0.1, exploration_steps=1_000_000, learning_starts=50_000)),
])
def test_an_old_checkpoint_resumes_with_the_values_it_used(tmp_path, monkeypatch, preset, exploration_steps, used):
    old = old_checkpoint(tmp_path, preset=preset, exploration_steps=exploration_steps)
    assert old["optimizer"] is None and old["learning_rate"] is None  # the old format
    monkeypatch.setattr(sys, "argv", ["dqn_atari.py", "--resume", str(tmp_path)])
    args, _ = harness.parse(dqn_atari.Args, algo="dqn")
    args = dqn_atari.fill_from_preset(args)  # what main() does on resume
    assert {name: getattr(args, name) for name in used} == used
    assert args.preset == preset and args.buffer_size == old["buffer_size"]


def test_a_new_checkpoint_is_not_filled():
    cleanrl, nature = dqn_atari.Args(), dqn_atari.Args(preset="nature", **dqn_atari.Args.PRESETS["nature"])
    assert cleanrl.exploration_steps is None  # 10% of the run, which a resume keeps
    assert dqn_atari.fill_from_preset(cleanrl) == cleanrl and dqn_atari.fill_from_preset(nature) == nature


def test_q_network_takes_uint8_frames_in_either_memory_format():
    torch.manual_seed(0)
    a, b = dqn_atari.QNetwork(6), dqn_atari.QNetwork(6, channels_last=True)
    b.load_state_dict(a.state_dict())
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    q_a, q_b = a(frames), b(frames)
    assert q_a.shape == (3, 6) and q_a.dtype == torch.float32
    torch.testing.assert_close(q_a, q_b, rtol=1e-4, atol=1e-5)
    # The frames are reordered while uint8, then scaled: the same values as scaling first, then reordering.
    scaled_first = b.network((frames.float() / 255.0).contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(q_b, scaled_first, rtol=1e-5, atol=1e-6)


# --- tiny end-to-end runs ----------------------------------------------------------------------------------

def run_script(*argv, cwd, check=True):
    result = subprocess.run([sys.executable, SCRIPT, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def steps_logged(run_dir, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return [e.step for e in events.Scalars(tag)]


def test_help_shows_both_presets_and_the_values_nature_sets(tmp_path):
    out = subprocess.run([sys.executable, SCRIPT, "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, COLUMNS="400")).stdout
    for text in ("--preset", "cleanrl", "nature", "--double-dqn", "--save-replay", "--eval-episodes"):
        assert text in out
    preset = " ".join(out.split("--preset", 1)[1].split("│ --", 1)[0].replace("│", " ").split())
    stated = dict(re.findall(r"--([a-z-]+) ([^ ;]+)", preset))  # its help, up to the next flag: "--flag value"
    nature = dqn_atari.Args.PRESETS["nature"]
    assert {name: type(value)(stated[name.replace("_", "-")]) for name, value in nature.items()} == nature
    assert len(stated) == len(nature)


@pytest.mark.slow
def test_train_save_resume_with_replay_and_run(tmp_path):
    import cv2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_script(*TINY, "--save-model", "--save-replay", "--eval-episodes", "1", "--runs-dir", "out", RUN_NAME, "a",
               cwd=tmp_path)
    assert not (tmp_path / "runs").exists(), "--runs-dir was ignored"
    run_dir = tmp_path / "out" / "a"
    model = torch.load(run_dir / "dqn_atari.model", weights_only=True)  # plain types only, or this fails
    assert model["format"] == 1 and model["algo"] == "dqn" and model["num_actions"] == 4
    assert type(model["num_actions"]) is int and model["args"]["runs_dir"] == "out"
    assert model["env_id"] == "BreakoutNoFrameskip-v4"
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 200
    assert (run_dir / "replay.npz").exists()
    events = EventAccumulator(str(run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/SPS", "charts/epsilon", "losses/td_loss", "losses/q_values",
            "time/env", "time/inference", "time/replay", "time/update", "eval/episodic_return"} <= tags
    assert "settings" in str(events.Tags())

    # Resume with the replay memory: no refill, learning goes on at once.
    result = run_script("--resume", str(run_dir), "--total-timesteps", "300", "--eval-episodes", "0", cwd=tmp_path)
    assert "warning" not in result.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == 300
    assert "100 agent steps" in result.stderr and " 25 updates" in result.stderr
    # The events logged at the checkpoint's step (200) stay, once; the resumed run logs from step 201 on.
    assert steps_logged(run_dir, "charts/SPS") == [1, 200, 201, 300]
    assert steps_logged(run_dir, "losses/td_loss") == [200, 300]

    result = run_script("--run", str(run_dir / "dqn_atari.model"), "--run-episodes", "1", cwd=tmp_path)
    assert "game 1: score" in result.stdout and "mean" in result.stdout
    length = int(result.stdout.split("(")[1].split(" agent steps")[0])
    video = cv2.VideoCapture(str(tmp_path / "videos" / "dqn_atari.mp4"))
    decoded = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        decoded.append(frame.shape)
    video.release()
    # One frame per observation of the game (its first and every step's), colour screen | 84x84 input.
    assert len(decoded) == length + 1 and set(decoded) == {(420, 320 + 420, 3)}


@pytest.mark.slow
def test_resume_without_replay_refills_first(tmp_path):
    result = run_script(*TINY, "--save-model", RUN_NAME, "b", "--learning-starts", "150", cwd=tmp_path)
    assert " 13 updates" in result.stderr  # after step 150, at steps 152, 156, ..., 200
    assert (tmp_path / "runs" / "b" / "checkpoint.pt").exists()  # --runs-dir defaults to runs/
    # --no-lazy-greedy (a speed flag) counts on resume; --gamma (what the run learns) comes from the checkpoint.
    result = run_script("--resume", str(tmp_path / "runs" / "b"), "--total-timesteps", "300", "--no-lazy-greedy",
                        "--gamma", "0.5", cwd=tmp_path)
    assert " 0 updates" in result.stderr  # 100 steps after the resume are fewer than the 150 to refill
    saved = torch.load(tmp_path / "runs" / "b" / "checkpoint.pt", weights_only=True)["args"]
    assert saved["lazy_greedy"] is False and saved["gamma"] == 0.99


@pytest.mark.slow
def test_an_old_checkpoint_resumes_in_main_with_the_values_it_used(tmp_path):
    """A checkpoint as the script saved it before the presets' values were its defaults: each flag of the
    preset that was not typed is None. The resume trains with the preset's values (RMSProp, whose saved
    state would not load into Adam) and saves them in its checkpoint."""
    run_script(*TINY, "--save-model", RUN_NAME, "o", "--preset", "nature", cwd=tmp_path)
    path = tmp_path / "runs" / "o" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    # TINY types --learning-starts and --end-e; the old script saved the other five as None
    untyped = ("optimizer", "learning_rate", "loss", "target_network_frequency", "exploration_steps")
    checkpoint["args"].update(dict.fromkeys(untyped))
    torch.save(checkpoint, path)
    run_script("--resume", str(path.parent), "--total-timesteps", "300", cwd=tmp_path)
    saved = torch.load(path, weights_only=True)
    nature = dqn_atari.Args.PRESETS["nature"]
    assert saved["global_step"] == 300
    assert {name: saved["args"][name] for name in nature} == dict(nature, learning_starts=100, end_e=0.5)


@pytest.mark.slow
def test_same_seed_same_weights(tmp_path):
    for name in ("s1", "s2"):
        run_script(*TINY, "--save-model", RUN_NAME, name, "--double-dqn", "--preset", "nature",
                   "--learning-starts", "100", cwd=tmp_path)
    a = torch.load(tmp_path / "runs" / "s1" / "dqn_atari.model", weights_only=True)["model"]
    b = torch.load(tmp_path / "runs" / "s2" / "dqn_atari.model", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env-id", "NoSuchGame-v4"], "unknown Atari game"),
        (["--num-envs", "0"], "--num-envs"),
        (["--buffer-size", "4"], "--buffer-size"),
        (["--save-replay", "--no-save-model"], "drop --no-save-model"),
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--end-e", "2"], "--end-e must be in [0, 1]"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number above 0, got nan"),
        (["--learning-rate", "-1"], "--learning-rate must be a finite number above 0, got -1"),
        (["--gamma", "2"], "--gamma must be in [0, 1], got 2"),
        (["--runs-dir", "a_file"], "--runs-dir 'a_file' cannot be a directory"),
        (["--run", "missing.model"], "does not exist"),
        (["--run", "corrupt.model"], "cannot read"),
        (["--run", "ppo.model"], "ppo_atari.py"),
        (["--resume", "runs/nothing"], "does not exist"),
    ],
)
def test_bad_input_ends_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    """In this process (a second each): main() must end in SystemExit(2) after one line; any other
    exception, i.e. a traceback, fails the test."""
    (tmp_path / "corrupt.model").write_bytes(b"not a model")
    (tmp_path / "a_file").write_text("")
    torch.save({"format": 1, "algo": "ppo", "model": {}, "env_id": "BreakoutNoFrameskip-v4", "num_actions": 4},
               tmp_path / "ppo.model")
    line = main_ends_in_one_line(dqn_atari.main, ["dqn_atari.py", *TINY, *argv], tmp_path, monkeypatch, capsys)
    assert message in line


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--env-id", "NoSuchGame-v4"], ["--run", "corrupt.model"]])
def test_bad_input_in_a_real_process_prints_no_traceback(tmp_path, argv):
    (tmp_path / "corrupt.model").write_bytes(b"not a model")
    result = run_script(*TINY, *argv, cwd=tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_replay_that_resume(tmp_path):
    import signal

    from conftest import interrupt_when_running

    run_dir = tmp_path / "runs" / "t"
    never = str(10**9)  # the run would go on for days and checkpoints only when stopped
    result = interrupt_when_running(SCRIPT, [*TINY, "--total-timesteps", never, "--save-model", "--save-replay",
                                             "--checkpoint-every", never, RUN_NAME, "t"],
                                    run_dir, signal.SIGTERM, tmp_path, settle_s=1.0)  # some steps into the loop
    stderr = result.stderr
    assert result.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"]
    assert stderr.strip().splitlines()[-1] == (f"stopped by SIGTERM at agent step {step}: checkpoint saved; "
                                              f"continue with --resume {os.path.join('runs', 't')}")
    assert 0 < step < 10**9 and "Traceback" not in stderr
    with np.load(run_dir / "replay.npz") as replay:
        assert int(replay["global_step"]) == step  # the memory of the same step, so the resume is exact
    assert not (run_dir / "dqn_atari.model").exists()

    result = run_script("--resume", str(run_dir), "--total-timesteps", str(step + 100), cwd=tmp_path)
    assert "warning" not in result.stderr and "100 agent steps" in result.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == step + 100


def test_a_bf16_target_network_gives_the_targets_of_autocast_over_float32_weights():
    """main() holds the target network in bf16 under --bf16 (faster: no cast of its weights per update);
    autocast rounds float32 weights to the same bf16 values, so the Q-values must be bit-identical."""
    torch.manual_seed(0)
    online = dqn_atari.QNetwork(4, channels_last=True)
    target_fp32 = dqn_atari.QNetwork(4, channels_last=True)
    target_bf16 = dqn_atari.QNetwork(4, channels_last=True).to(dtype=torch.bfloat16)
    target_fp32.load_state_dict(online.state_dict())
    target_bf16.load_state_dict(online.state_dict())  # what main() does at each copy
    frames = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = target_fp32(frames), target_bf16(frames)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
