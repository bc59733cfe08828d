"""Tests of ppo_atari.py: the maths against hand-computed values, then tiny end-to-end runs."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from conftest import main_ends_in_one_line, scalars  # noqa: E402
import ppo_atari  # noqa: E402
from ppo_atari import Agent, compute_gae, normalize_advantages, ppo_loss  # noqa: E402

SCRIPT = os.path.join(ROOT, "ppo_atari.py")
# Two updates of 2 envs x 16 steps, one epoch of 2 minibatches: every code path, in seconds.
TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
        "--total-timesteps", "64", "--no-progress", "--torch-threads", "1", "--env-threads", "1", "--eval-episodes", "0"]


def column(*xs: float) -> torch.Tensor:
    """A (T, 1) float tensor: T steps of one env."""
    return torch.tensor(xs, dtype=torch.float32).unsqueeze(1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(1)


# --- advantage estimation ----------------------------------------------------------------------------------

def test_gae_truncation_bootstraps_and_the_reset_step_is_masked():
    # The game is truncated at t=1: delta_1 bootstraps from V(obs_2), the game's last observation, but the
    # advantage does not flow back from t=2; t=2 is the reset step (its action was ignored): advantage 0.
    gamma, lam = 0.9, 0.8
    rewards, values, next_value = column(1, 0, 2, 1), column(0.5, 1.0, 1.5, 2.0), torch.tensor([3.0])
    terminated, episode_ends, valid = flags(0, 0, 0, 0), flags(0, 1, 0, 0), flags(1, 1, 0, 1)
    advantages, returns = compute_gae(rewards, values, next_value, terminated, episode_ends, valid, gamma, lam)
    a3 = 1 + 0.9 * 3.0 - 2.0  # 1.7, bootstraps from next_value
    a2 = 0.0  # reset step
    a1 = 0 + 0.9 * 1.5 - 1.0  # 0.35: truncation bootstraps from V(obs_2) = 1.5, no A_2 carried back
    a0 = (1 + 0.9 * 1.0 - 0.5) + 0.9 * 0.8 * a1  # 1.652
    torch.testing.assert_close(advantages, column(a0, a1, a2, a3))
    torch.testing.assert_close(returns, advantages + values)


def test_gae_life_loss_stops_bootstrapping_but_the_game_goes_on():
    # A life is lost at t=1 (the game goes on: t=2 is a valid step), the game is over at t=3, t=4 is the
    # reset step of the next game.
    gamma, lam = 0.9, 0.8
    rewards, values, next_value = column(1, 1, 0, 1, 0), column(1, 2, 3, 4, 5), torch.tensor([6.0])
    terminated, episode_ends, valid = flags(0, 1, 0, 1, 0), flags(0, 0, 0, 1, 0), flags(1, 1, 1, 1, 0)
    advantages, _ = compute_gae(rewards, values, next_value, terminated, episode_ends, valid, gamma, lam)
    a4 = 0.0  # reset step
    a3 = 1 - 4.0  # game over: no bootstrap, no carry
    a2 = (0 + 0.9 * 4 - 3) + 0.72 * a3  # 0.6 - 2.16
    a1 = 1 - 2.0  # life lost: no bootstrap, no carry
    a0 = (1 + 0.9 * 2 - 1) + 0.72 * a1  # 1.8 - 0.72
    torch.testing.assert_close(advantages, column(a0, a1, a2, a3, a4))


def test_gae_envs_are_independent_columns():
    gamma, lam = 0.99, 0.95
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    next_value = torch.randn(3, generator=g)
    terminated = torch.rand(6, 3, generator=g) < 0.3
    episode_ends = terminated & (torch.rand(6, 3, generator=g) < 0.5)
    valid = torch.ones(6, 3, dtype=torch.bool)
    valid[1:] = ~episode_ends[:-1]
    both, _ = compute_gae(rewards, values, next_value, terminated, episode_ends, valid, gamma, lam)
    for i in range(3):
        one, _ = compute_gae(rewards[:, i:i + 1], values[:, i:i + 1], next_value[i:i + 1], terminated[:, i:i + 1],
                             episode_ends[:, i:i + 1], valid[:, i:i + 1], gamma, lam)
        torch.testing.assert_close(both[:, i:i + 1], one)


# --- the PPO loss ------------------------------------------------------------------------------------------

def test_ppo_loss_by_hand():
    clip, vf_coef, ent_coef = 0.2, 0.5, 0.01
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.1, 3.0])
    advantages = torch.tensor([1.0, -1.0, 1.0, 2.0, 100.0])
    old_log_probs = torch.tensor([-1.0, -2.0, -0.5, -1.5, -1.0])
    new_log_probs = (old_log_probs + ratio.log()).requires_grad_()
    old_values = torch.tensor([1.0, 1.0, 0.0, 2.0, 0.0])
    new_values = torch.tensor([1.5, 1.5, 0.1, 2.0, 10.0], requires_grad=True)
    returns = torch.tensor([2.0, 1.0, 1.0, 2.0, -10.0])
    entropy = torch.tensor([1.0, 1.2, 1.4, 1.6, 50.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])  # the last entry is a reset step

    loss, stats = ppo_loss(new_log_probs, old_log_probs, advantages, new_values, old_values, returns, entropy,
                           mask, clip, vf_coef, ent_coef, clip_vloss=True)
    # -min(r A, clip(r) A): clipped above (1.2), clipped below (-0.8), the unclipped pessimistic side (0.5), inside
    policy = (-1.2 + 0.8 - 0.5 - 2.2) / 4
    # max((V - R)^2, (V_old + clip(V - V_old) - R)^2): the clipped one (0.64), the unclipped one (0.25), ...
    value = 0.5 * (0.64 + 0.25 + 0.81 + 0.0) / 4
    entropy_mean = (1.0 + 1.2 + 1.4 + 1.6) / 4
    assert stats["policy_loss"].item() == pytest.approx(policy, abs=1e-6)
    assert stats["value_loss"].item() == pytest.approx(value, abs=1e-6)
    assert stats["entropy"].item() == pytest.approx(entropy_mean, abs=1e-6)
    assert loss.item() == pytest.approx(policy - ent_coef * entropy_mean + vf_coef * value, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.75)
    kl = sum((r - 1) - math.log(r) for r in (1.5, 0.5, 0.5, 1.1)) / 4
    assert stats["approx_kl"].item() == pytest.approx(kl, abs=1e-6)
    assert stats["old_approx_kl"].item() == pytest.approx(-sum(math.log(r) for r in (1.5, 0.5, 0.5, 1.1)) / 4)

    loss.backward()  # the masked entry and the clipped ones get no policy gradient; the unclipped ones do
    policy_grad, value_grad = new_log_probs.grad.tolist(), new_values.grad.tolist()
    assert policy_grad[4] == 0 and value_grad[4] == 0
    assert policy_grad[0] == 0 and policy_grad[1] == 0
    assert policy_grad[2] == pytest.approx(-0.5 / 4) and policy_grad[3] == pytest.approx(-2.2 / 4)
    assert value_grad[0] == 0  # the clipped value term has no gradient

    _, stats = ppo_loss(new_log_probs, old_log_probs, advantages, new_values, old_values, returns, entropy,
                        mask, clip, vf_coef, ent_coef, clip_vloss=False)
    assert stats["value_loss"].item() == pytest.approx(0.5 * (0.25 + 0.25 + 0.81 + 0.0) / 4, abs=1e-6)


def test_advantage_normalization_ignores_masked_entries():
    advantages, mask = torch.tensor([1.0, 2.0, 3.0, 1000.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(normalize_advantages(advantages, mask), torch.tensor([-1.0, 0.0, 1.0, 0.0]))


def test_agent_takes_uint8_frames_in_either_memory_format():
    torch.manual_seed(0)
    a, b = Agent(4), Agent(4, channels_last=True)
    b.load_state_dict(a.state_dict())
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    (logits_a, values_a), (logits_b, values_b) = a(frames), b(frames)
    assert logits_a.shape == (3, 4) and values_a.shape == (3,) and logits_a.dtype == torch.float32
    torch.testing.assert_close(logits_a, logits_b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(values_a, values_b, rtol=1e-4, atol=1e-5)


# --- tiny end-to-end runs ----------------------------------------------------------------------------------

def run_script(*argv, cwd, check=True):
    result = subprocess.run([sys.executable, SCRIPT, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_help(tmp_path):
    out = run_script("--help", cwd=tmp_path).stdout
    for text in ("--runs-dir", "--resume", "--run ", "--save-model", "--channels-last", "--total-timesteps"):
        assert text in out


@pytest.mark.slow
def test_train_save_resume_and_run(tmp_path):
    runs = tmp_path / "out"
    run_script(*TINY, "--save-model", "--checkpoint-every", "32", "--runs-dir", str(runs), "--run-name", "a",
               cwd=tmp_path)
    run_dir = runs / "a"
    model = torch.load(run_dir / "ppo_atari.model", weights_only=True)
    assert set(model) == {"format", "algo", "env_id", "num_actions", "model", "args"}
    assert model["format"] == 1 and model["algo"] == "ppo" and model["num_actions"] == 4
    assert model["env_id"] == "BreakoutNoFrameskip-v4" and model["args"]["num_envs"] == 2
    Agent(4).load_state_dict(model["model"])
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 64 and checkpoint["iteration"] == 2
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [32, 64]
    assert not (tmp_path / "runs").exists()  # everything went under --runs-dir

    # Resume to 128 steps: the step count continues from the checkpoint's 64, it does not restart at 0.
    result = run_script("--resume", str(run_dir), "--total-timesteps", "128", cwd=tmp_path)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128 and checkpoint["iteration"] == 4, result.stderr[-2000:]
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [32, 64, 96, 128]
    assert [step for step, _ in scalars(run_dir, "losses/value_loss")] == [32, 64, 96, 128]

    # Replay two games with a video: one score per game, then mean and std.
    result = run_script("--run", str(run_dir / "ppo_atari.model"), "--run-episodes", "2", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("game ")] == ["game 1", "game 2"]
    scores = [float(line.split("score ")[1].split()[0]) for line in lines if line.startswith("game ")]
    summary = [line for line in lines if line.startswith("mean ")]
    assert summary == [f"mean {np.mean(scores):.2f} +- {np.std(scores):.2f} (std) over 2 games of "
                       "BreakoutNoFrameskip-v4"]
    import cv2

    capture = cv2.VideoCapture(str(tmp_path / "videos" / "ppo_atari.mp4"))
    ok, frame = capture.read()
    assert ok
    colour_width, input_width = 2 * 160, 2 * 210  # the screen doubled, the 84x84 input at the same height
    assert frame.shape == (420, colour_width + input_width, 3)
    steps = sum(int(line.split("(")[1].split()[0]) for line in lines if line.startswith("game "))
    frames = 1
    while capture.read()[0]:
        frames += 1
    assert frames == steps + 2  # every agent step, plus the first observation of each game


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SCRIPT,
         *TINY, "--total-timesteps", "128", "--save-model", "--runs-dir", "out", "--run-name", "d"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "d"
    # The job's steps: 2 processes x 2 envs x 16 steps = 64 per update, 2 updates.
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [64, 128]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128 and len(checkpoint["rng"]) == 2
    written = sorted(p.name for p in run_dir.iterdir())
    assert len([name for name in written if name.startswith("events.out.tfevents")]) == 1  # rank 0 alone
    events = [n for n in written if n.startswith("events")]
    assert written == sorted([".lock", "checkpoint.pt", "ppo_atari.model", *events])
    assert result.stderr.count("model saved") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    for name in ("s1", "s2"):
        run_script(*TINY, "--runs-dir", "out", "--run-name", name, cwd=tmp_path)
    tags = ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
            "losses/explained_variance"]
    for tag in tags:
        first, second = scalars(tmp_path / "out" / "s1", tag), scalars(tmp_path / "out" / "s2", tag)
        assert len(first) == 2 and first == second, tag


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env-id", "NoSuchGame-v4"], "unknown Atari game"),
        (["--num-envs", "0"], "--num-envs"),
        (["--num-minibatches", "3"], "minibatches"),
        (["--resume", "runs/nothing"], "does not exist"),
        (["--run", "missing.model"], "does not exist"),
        (["--run", "corrupt.model"], "cannot read"),
        (["--run", "breakout.model", "--env-id", "PongNoFrameskip-v4"], "trained on BreakoutNoFrameskip-v4"),
        (["--run", "pong_labelled.model"], "actions"),
        (["--run", "breakout.model", "--resume", "runs/a"], "give one of them"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number above 0, got nan"),
        (["--learning-rate", "-1"], "--learning-rate must be a finite number above 0, got -1"),
        (["--gamma", "2"], "--gamma must be in [0, 1], got 2"),
        (["--gae-lambda", "-0.1"], "--gae-lambda must be in [0, 1]"),
        (["--clip-coef", "-1"], "--clip-coef must be a finite number of at least 0"),
        (["--target-kl", "0"], "--target-kl must be a finite number above 0"),
        (["--update-epochs", "0"], "--update-epochs must be at least 1"),
    ],
)
def test_bad_input_ends_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    """In this process: main() must end in SystemExit(2) after one line, having created nothing; any other
    exception, i.e. a traceback, fails the test (a real process: tests/test_a2c.py, tests/test_dqn.py)."""
    (tmp_path / "corrupt.model").write_bytes(b"not a model")
    breakout = {"format": 1, "algo": "ppo", "env_id": "BreakoutNoFrameskip-v4", "num_actions": 4,
                "model": Agent(4).state_dict(), "args": {}}
    torch.save(breakout, tmp_path / "breakout.model")
    torch.save(dict(breakout, env_id="PongNoFrameskip-v4"), tmp_path / "pong_labelled.model")  # 4 != Pong's 6
    line = main_ends_in_one_line(ppo_atari.main, ["ppo_atari.py", *TINY, *argv], tmp_path, monkeypatch, capsys)
    assert message in line


@pytest.mark.slow
def test_clipfrac_is_the_mean_over_the_updates_minibatches(tmp_path):
    # As CleanRL logs it. ppo_loss is made to report clipfrac = its call count: the first update's two
    # minibatches say 1 and 2, the second's 3 and 4, so the logged means are 1.5 and 3.5 (the last
    # minibatch alone would say 2 and 4).
    code = (
        "import sys, torch, ppo_atari\n"
        "real, calls = ppo_atari.ppo_loss, [0]\n"
        "def counted(*a, **k):\n"
        "    calls[0] += 1\n"
        "    loss, stats = real(*a, **k)\n"
        "    return loss, dict(stats, clipfrac=torch.tensor(float(calls[0])))\n"
        "ppo_atari.ppo_loss = counted\n"
        f"sys.argv = ['ppo_atari.py', *{TINY!r}, '--runs-dir', 'out', '--run-name', 'c']\n"
        "ppo_atari.main()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert scalars(tmp_path / "out" / "c", "losses/clipfrac") == [(32, 1.5), (64, 3.5)]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path):
    import signal

    from conftest import interrupt_when_running

    run_dir = tmp_path / "out" / "i"
    never = str(10**9)  # the run would go on for days and checkpoints only when stopped
    result = interrupt_when_running(SCRIPT, [*TINY, "--total-timesteps", never, "--save-model", "--checkpoint-every",
                                             never, "--runs-dir", "out", "--run-name", "i"],
                                    run_dir, signal.SIGINT, tmp_path)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    step = checkpoint["global_step"]
    assert last == (f"stopped by SIGINT at agent step {step}: checkpoint saved; "
                    f"continue with --resume {run_dir.relative_to(tmp_path)}")
    assert 0 < step < 10**9 and step % 32 == 0 and checkpoint["iteration"] == step // 32
    assert "Traceback" not in result.stderr
    assert not (run_dir / "ppo_atari.model").exists()  # the final model is for finished runs

    result = run_script("--resume", str(run_dir), "--total-timesteps", str(step + 64), cwd=tmp_path)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == step + 64
    assert (run_dir / "ppo_atari.model").exists()
