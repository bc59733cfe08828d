"""Tests of pqn_atari.py: the Q(lambda) returns by hand across every episode boundary, the loss and the acting
rule, then tiny real runs (train, save, resume, --run, torchrun, the same seed) and bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from conftest import main_ends_in_one_line, scalars  # noqa: E402
import pqn_atari  # noqa: E402
from pqn_atari import QNetwork, epsilon_greedy, q_lambda_returns, q_loss  # noqa: E402

SCRIPT = os.path.join(ROOT, "pqn_atari.py")
TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
        "--total-timesteps", "64", "--no-progress", "--torch-threads", "1", "--env-threads", "1", "--eval-episodes", "0"]


def column(*xs: float) -> torch.Tensor:
    """A (T, 1) float tensor: T steps of one env."""
    return torch.tensor(xs, dtype=torch.float32).unsqueeze(1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(1)


# Four steps of one env, gamma = lambda = 0.5, so that every return is a short sum by hand.
REWARDS, MAX_Q, NEXT_MAX_Q = column(1, 2, 3, 4), column(10, 20, 30, 40), torch.tensor([50.0])


def returns(terminated=(0, 0, 0, 0), episode_ends=(0, 0, 0, 0), valid=(1, 1, 1, 1), rewards=REWARDS):
    return q_lambda_returns(rewards, MAX_Q, NEXT_MAX_Q, flags(*terminated), flags(*episode_ends), flags(*valid),
                            gamma=0.5, lam=0.5).squeeze(1).tolist()


def test_q_lambda_without_a_boundary_by_hand():
    # R3 = 4 + .5 * 50; R_t = r_t + .5 * (.5 * R_{t+1} + .5 * maxQ_{t+1})
    assert returns() == [9.640625, 14.5625, 20.25, 29.0]


def test_q_lambda_truncation_bootstraps_from_the_last_observation_and_the_reset_step_weighs_zero():
    # The frame cap at step 1: step 2 is the reset step (its observation is the finished game's last, whose
    # max-Q is 30), a new game from step 3. R1 = 2 + .5 * 30 alone; R2 = 0; nothing flows from step 3 to 1.
    assert returns(episode_ends=(0, 1, 0, 0), valid=(1, 1, 0, 1), rewards=column(1, 2, 0, 4)) == \
        [1 + 0.5 * (0.5 * 17 + 0.5 * 20), 17.0, 0.0, 29.0]


def test_q_lambda_a_lost_life_stops_bootstrapping_but_the_game_goes_on():
    # R1 = 2 alone; after the life loss the game goes on, so steps 2-3 are ordinary.
    assert returns(terminated=(0, 1, 0, 0)) == [1 + 0.5 * (0.5 * 2 + 0.5 * 20), 2.0, 20.25, 29.0]


def test_q_lambda_a_game_over_stops_bootstrapping_and_the_reset_step_weighs_zero():
    assert returns(terminated=(0, 1, 0, 0), episode_ends=(0, 1, 0, 0), valid=(1, 1, 0, 1)) == [6.5, 2.0, 0.0, 29.0]


def test_q_lambda_a_truncation_at_the_last_step_bootstraps_from_the_next_observation():
    assert returns(episode_ends=(0, 0, 0, 1))[3] == 4 + 0.5 * 50


def test_q_lambda_is_the_plain_recursion_where_no_boundary_falls():
    """Random rollouts of 3 envs: the function against CleanRL's recursion written out, for several lambdas."""
    generator = torch.Generator().manual_seed(0)
    rewards, max_q = torch.randn(7, 3, generator=generator), torch.randn(7, 3, generator=generator)
    next_max_q = torch.randn(3, generator=generator)
    no = torch.zeros(7, 3, dtype=torch.bool)
    for lam in (0.0, 0.65, 1.0):
        expected = torch.zeros(7, 3)
        expected[6] = rewards[6] + 0.99 * next_max_q
        for t in reversed(range(6)):
            expected[t] = rewards[t] + 0.99 * (lam * expected[t + 1] + (1 - lam) * max_q[t + 1])
        got = q_lambda_returns(rewards, max_q, next_max_q, no, no, ~no, gamma=0.99, lam=lam)
        torch.testing.assert_close(got, expected)


def test_q_loss_is_the_mean_squared_error_over_valid_steps():
    q, r = torch.tensor([1.0, 2.0, 5.0]), torch.tensor([0.0, 4.0, -100.0])
    assert q_loss(q, r, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx((1 + 4) / 2)


def test_epsilon_greedy_is_argmax_at_zero_and_uniform_at_one():
    q_values = torch.tensor([[0.0, 3.0, 1.0]]).repeat(3000, 1)
    assert (epsilon_greedy(q_values, 0.0) == 1).all()
    torch.manual_seed(0)
    counts = torch.bincount(epsilon_greedy(q_values, 1.0), minlength=3)
    assert ((counts > 900) & (counts < 1100)).all(), counts


def test_q_network_has_layer_norm_after_every_hidden_layer_and_takes_uint8_frames():
    for channels_last in (False, True):
        net = QNetwork(6, channels_last=channels_last)
        norms = [m for m in net.network if isinstance(m, torch.nn.LayerNorm)]
        assert [tuple(m.normalized_shape) for m in norms] == [(32, 20, 20), (64, 9, 9), (64, 7, 7), (512,)]
        q = net(torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8))
        assert q.shape == (5, 6) and q.dtype == torch.float32


def run_script(*argv, cwd, check=True):
    result = subprocess.run([sys.executable, SCRIPT, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_help(tmp_path):
    out = run_script("--help", cwd=tmp_path).stdout
    for text in ("--q-lambda", "--eval-epsilon", "--exploration-fraction", "--resume", "--run ", "--save-model"):
        assert text in out


@pytest.mark.slow
def test_train_save_resume_and_run(tmp_path):
    run_script(*TINY, "--save-model", "--checkpoint-every", "32", "--runs-dir", "out", "--run-name", "a",
               cwd=tmp_path)
    run_dir = tmp_path / "out" / "a"
    model = torch.load(run_dir / "pqn_atari.model", weights_only=True)
    assert model["algo"] == "pqn" and model["num_actions"] == 4 and model["args"]["q_lambda"] == 0.65
    QNetwork(4).load_state_dict(model["model"])
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 2
    assert [step for step, _ in scalars(run_dir, "losses/td_loss")] == [32, 64]

    result = run_script("--resume", str(run_dir), "--total-timesteps", "128", cwd=tmp_path)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128 and checkpoint["iteration"] == 4, result.stderr[-2000:]
    assert [step for step, _ in scalars(run_dir, "charts/epsilon")] == [32, 64, 96, 128]

    result = run_script("--run", str(run_dir / "pqn_atari.model"), "--run-episodes", "2", cwd=tmp_path)
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("game ")] == ["game 1", "game 2"]
    assert (tmp_path / "videos" / "pqn_atari.mp4").stat().st_size > 0
    result = run_script("--run", "random", "--run-episodes", "1", "--no-video", cwd=tmp_path)
    assert "over 1 games of BreakoutNoFrameskip-v4" in result.stdout


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    for name in ("s1", "s2"):
        run_script(*TINY, "--runs-dir", "out", "--run-name", name, cwd=tmp_path)
    for tag in ("losses/td_loss", "losses/q_values"):
        first, second = scalars(tmp_path / "out" / "s1", tag), scalars(tmp_path / "out" / "s2", tag)
        assert len(first) == 2 and first == second, tag


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SCRIPT,
         *TINY, "--total-timesteps", "128", "--save-model", "--runs-dir", "out", "--run-name", "d"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "d"
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [64, 128]  # 2 processes x 2 envs x 16 steps
    assert len(torch.load(run_dir / "checkpoint.pt", weights_only=True)["rng"]) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--q-lambda", "1.5"], "--q-lambda must be in [0, 1], got 1.5"),
        (["--exploration-fraction", "-0.1"], "--exploration-fraction must be in [0, 1]"),
        (["--eval-epsilon", "2"], "--eval-epsilon must be in [0, 1]"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number above 0, got nan"),
        (["--num-minibatches", "3"], "minibatches"),
        (["--env-id", "NoSuchGame-v4"], "unknown Atari game"),
        (["--run", "ppo.model"], "holds a 'ppo' model; use ppo_atari.py"),
        (["--total-timesteps", "10"], "less than one rollout"),
    ],
)
def test_bad_input_ends_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    torch.save({"format": 1, "algo": "ppo", "model": {}, "env_id": "BreakoutNoFrameskip-v4", "num_actions": 4},
               tmp_path / "ppo.model")
    line = main_ends_in_one_line(pqn_atari.main, ["pqn_atari.py", *TINY, *argv], tmp_path, monkeypatch, capsys)
    assert message in line
