"""Tests of a2c_atari.py: the maths and the optimizer against hand-computed values, then tiny end-to-end runs."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from conftest import main_ends_in_one_line, scalars  # noqa: E402
import a2c_atari  # noqa: E402
from a2c_atari import Agent, RMSpropTF, a2c_loss, compute_advantages  # noqa: E402

SCRIPT = os.path.join(ROOT, "a2c_atari.py")
# "--run_name", not "--run-name": benchmarks pause the long background runs with
# `pkill -STOP -f -- '--run-name'`, which must not freeze these tests' runs too.
RUN_NAME = "--run_name"
# Four updates of 2 envs x 5 steps, every update logged: every code path, in seconds.
TINY = ["--num-envs", "2", "--num-steps", "5", "--total-timesteps", "40", "--log-every", "10", "--eval-episodes", "0",
        "--no-progress", "--torch-threads", "1", "--env-threads", "1"]
# Subprocess runs (torchrun's workers among them) get one OpenMP thread each: two 2-thread processes on 2 cores
# crawl (benchmark/studies/openmp_wait_policy.md).
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def column(*xs: float) -> torch.Tensor:
    """A (T, 1) float tensor: T steps of one env."""
    return torch.tensor(xs, dtype=torch.float32).unsqueeze(1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(1)


# --- n-step returns and advantages -------------------------------------------------------------------------

def test_n_step_returns_across_a_truncation_and_the_reset_step():
    # The game is truncated at t=1: R_1 bootstraps from V(obs_2), the game's last observation, and nothing
    # flows back from t=2, the reset step (its action was ignored), which gets advantage 0.
    gamma = 0.9
    rewards, values, next_value = column(1, 0, 2, 1), column(0.5, 1.0, 1.5, 2.0), torch.tensor([3.0])
    terminated, episode_ends, valid = flags(0, 0, 0, 0), flags(0, 1, 0, 0), flags(1, 1, 0, 1)
    advantages, returns = compute_advantages(rewards, values, next_value, terminated, episode_ends, valid, gamma, 1.0)
    r3 = 1 + 0.9 * 3.0  # bootstraps from the value after the rollout
    r1 = 0 + 0.9 * 1.5  # truncation: bootstraps from V(obs_2), the truncated game's last observation
    r0 = 1 + 0.9 * r1
    torch.testing.assert_close(advantages, column(r0 - 0.5, r1 - 1.0, 0.0, r3 - 2.0))
    torch.testing.assert_close(returns, advantages + values)


def test_n_step_returns_stop_at_a_life_loss_and_a_game_over():
    # A life is lost at t=1 (the game goes on: t=2 is a valid step), the game is over at t=3, t=4 is the
    # reset step of the next game, t=5 its first real step.
    gamma = 0.9
    rewards, values, next_value = column(1, 1, 0, 1, 0, 1), column(1, 2, 3, 4, 5, 6), torch.tensor([7.0])
    terminated, episode_ends = flags(0, 1, 0, 1, 0, 0), flags(0, 0, 0, 1, 0, 0)
    valid = flags(1, 1, 1, 1, 0, 1)
    advantages, returns = compute_advantages(rewards, values, next_value, terminated, episode_ends, valid, gamma, 1.0)
    r5 = 1 + 0.9 * 7.0
    r3 = 1.0  # game over: no bootstrap
    r2 = 0 + 0.9 * r3
    r1 = 1.0  # life lost: no bootstrap, although the game goes on
    r0 = 1 + 0.9 * r1
    torch.testing.assert_close(advantages, column(r0 - 1, r1 - 2, r2 - 3, r3 - 4, 0.0, r5 - 6))


def test_gae_lambda_below_one_is_the_lambda_return():
    # Within a rollout of 3 steps, the lambda-return weighs the 1-, 2- and 3-step returns (1 - l), l (1 - l)
    # and l^2 (the rest of the weight goes on the longest one); the advantage is it minus V(obs_0).
    gamma, lam = 0.9, 0.5
    rewards, values, next_value = column(1, 0, 1), column(0.5, 1.0, 1.5), torch.tensor([2.0])
    no, yes = flags(0, 0, 0), flags(1, 1, 1)
    advantages, _ = compute_advantages(rewards, values, next_value, no, no, yes, gamma, lam)
    g1 = 1 + 0.9 * 1.0
    g2 = 1 + 0.9 * 0 + 0.81 * 1.5
    g3 = 1 + 0.9 * 0 + 0.81 * 1 + 0.729 * 2.0
    lambda_return = (1 - lam) * g1 + lam * (1 - lam) * g2 + lam**2 * g3
    assert advantages[0, 0].item() == pytest.approx(lambda_return - 0.5, abs=1e-6)
    assert advantages[2, 0].item() == pytest.approx(1 + 0.9 * 2.0 - 1.5, abs=1e-6)  # the last step: one delta


# --- the A2C loss ------------------------------------------------------------------------------------------

def test_a2c_loss_by_hand():
    vf_coef, ent_coef = 0.25, 0.01
    log_probs = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)
    advantages = torch.tensor([2.0, -1.0, 0.5, 100.0], requires_grad=True)
    values = torch.tensor([1.0, 2.0, 0.5, 5.0], requires_grad=True)
    returns = torch.tensor([2.0, 1.0, 1.0, -5.0])
    entropy = torch.tensor([1.0, 1.2, 1.4, 9.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the last entry is a reset step

    loss, stats = a2c_loss(log_probs, advantages, values, returns, entropy, mask, vf_coef, ent_coef)
    policy = -(2.0 * -1.0 + -1.0 * -2.0 + 0.5 * -0.5) / 3
    value = (1.0 + 1.0 + 0.25) / 3  # (R - V)^2, no factor 1/2
    entropy_mean = (1.0 + 1.2 + 1.4) / 3
    assert stats["policy_loss"].item() == pytest.approx(policy, abs=1e-6)
    assert stats["value_loss"].item() == pytest.approx(value, abs=1e-6)
    assert stats["entropy"].item() == pytest.approx(entropy_mean, abs=1e-6)
    assert loss.item() == pytest.approx(policy - ent_coef * entropy_mean + vf_coef * value, abs=1e-6)
    assert not any(s.requires_grad for s in stats.values())

    loss.backward()  # the advantages are constants; the reset step gets no gradient
    assert advantages.grad is None
    torch.testing.assert_close(log_probs.grad, torch.tensor([-2.0, 1.0, -0.5, 0.0]) / 3)
    torch.testing.assert_close(values.grad, vf_coef * 2 * torch.tensor([-1.0, 1.0, -0.5, 0.0]) / 3)


# --- the optimizer -----------------------------------------------------------------------------------------

def test_rmsprop_tf_two_steps_by_hand():
    # v starts at 1 and eps sits inside the root: p <- p - lr * g / sqrt(v + eps).
    lr, alpha, eps = 0.1, 0.9, 0.01
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    b = torch.tensor([0.5], requires_grad=True)
    frozen = torch.tensor([3.0], requires_grad=True)  # no gradient: left alone
    optimizer = RMSpropTF([w, b, frozen], lr=lr, alpha=alpha, eps=eps)
    w.grad, b.grad = torch.tensor([0.5, -1.0]), torch.tensor([0.0])
    optimizer.step()
    v_w, v_b = [0.9 + 0.1 * 0.25, 0.9 + 0.1 * 1.0], [0.9]
    expected_w = [1.0 - lr * 0.5 / math.sqrt(v_w[0] + eps), -2.0 + lr * 1.0 / math.sqrt(v_w[1] + eps)]
    torch.testing.assert_close(w.detach(), torch.tensor(expected_w))
    torch.testing.assert_close(b.detach(), torch.tensor([0.5]))
    torch.testing.assert_close(frozen.detach(), torch.tensor([3.0]))

    # The second step continues the average; a copy restored from the saved state, as --resume does, agrees.
    copy_w, copy_b, copy_frozen = (p.detach().clone().requires_grad_() for p in (w, b, frozen))
    copy = RMSpropTF([copy_w, copy_b, copy_frozen], lr=lr, alpha=alpha, eps=eps)
    saved = io.BytesIO()
    torch.save(optimizer.state_dict(), saved)
    saved.seek(0)
    copy.load_state_dict(torch.load(saved, weights_only=True))
    for params in ((w, b), (copy_w, copy_b)):
        params[0].grad, params[1].grad = torch.tensor([0.5, 2.0]), torch.tensor([1.0])
    optimizer.step()
    copy.step()
    v_w, v_b = [0.9 * v_w[0] + 0.1 * 0.25, 0.9 * v_w[1] + 0.1 * 4.0], [0.9 * v_b[0] + 0.1 * 1.0]
    expected_w = [expected_w[0] - lr * 0.5 / math.sqrt(v_w[0] + eps),
                  expected_w[1] - lr * 2.0 / math.sqrt(v_w[1] + eps)]
    torch.testing.assert_close(w.detach(), torch.tensor(expected_w))
    torch.testing.assert_close(b.detach(), torch.tensor([0.5 - lr * 1.0 / math.sqrt(v_b[0] + eps)]))
    torch.testing.assert_close(copy_w.detach(), w.detach(), rtol=0, atol=0)


# --- tiny end-to-end runs ----------------------------------------------------------------------------------

def run_script(*argv, cwd, check=True):
    result = subprocess.run([sys.executable, SCRIPT, *argv], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env=ENV)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["a2c_atari.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        a2c_atari.main()
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for text in ("--optimizer {rmsprop_tf,adam}", "TensorFlow's form", "--anneal-lr", "--log-every", "--gae-lambda",
                 "--resume", "--run ", "--eval-every"):
        assert text in out


@pytest.mark.slow
def test_train_save_resume_and_run(tmp_path):
    run_script(*TINY, "--save-model", "--checkpoint-every", "20", "--runs-dir", "out", RUN_NAME, "a", cwd=tmp_path)
    run_dir = tmp_path / "out" / "a"
    model = torch.load(run_dir / "a2c_atari.model", weights_only=True)
    assert set(model) == {"format", "algo", "env_id", "num_actions", "model", "args"}
    assert model["algo"] == "a2c" and model["num_actions"] == 4 and model["args"]["optimizer"] == "rmsprop_tf"
    Agent(4).load_state_dict(model["model"])
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 40 and checkpoint["iteration"] == 4
    assert all("square_avg" in s for s in checkpoint["optimizer"]["state"].values())  # RMSprop's average goes on
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [10, 20, 30, 40]
    tags = ("charts/learning_rate", "losses/policy_loss", "losses/value_loss", "losses/entropy",
            "losses/explained_variance", "time/env", "time/inference", "time/update")
    assert all(len(scalars(run_dir, tag)) == 4 for tag in tags)
    assert [lr for _, lr in scalars(run_dir, "charts/learning_rate")] == [pytest.approx(7e-4)] * 4  # constant

    # Resume to 80 steps: the step count continues from the checkpoint's 40, it does not restart at 0.
    result = run_script("--resume", str(run_dir), "--total-timesteps", "80", cwd=tmp_path)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 80 and checkpoint["iteration"] == 8, result.stderr[-2000:]
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert [step for step, _ in scalars(run_dir, "losses/value_loss")] == [10, 20, 30, 40, 50, 60, 70, 80]

    # Replay one game with a video: its score, the mean, and one video frame per agent step plus the first.
    result = run_script("--run", str(run_dir / "a2c_atari.model"), "--run-episodes", "1", cwd=tmp_path)
    lines = result.stdout.splitlines()
    games = [line for line in lines if line.startswith("game ")]
    assert len(games) == 1 and games[0].startswith("game 1: score ")
    score, steps = float(games[0].split("score ")[1].split()[0]), int(games[0].split("(")[1].split()[0])
    assert f"mean {score:.2f} +- 0.00 (std) over 1 games of BreakoutNoFrameskip-v4" in lines
    import cv2

    capture = cv2.VideoCapture(str(tmp_path / "videos" / "a2c_atari.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == steps + 1


@pytest.mark.slow
def test_torchrun_two_processes_with_adam_and_an_annealed_learning_rate(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", SCRIPT,
         *TINY, "--log-every", "20", "--optimizer", "adam", "--anneal-lr", "--save-model", "--runs-dir", "out",
         RUN_NAME, "d"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "d"
    # The job's steps: 2 processes x 2 envs x 5 steps = 20 per update, 2 updates.
    assert [step for step, _ in scalars(run_dir, "charts/SPS")] == [20, 40]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 40 and checkpoint["iteration"] == 2 and len(checkpoint["rng"]) == 2
    assert all("exp_avg" in s for s in checkpoint["optimizer"]["state"].values())
    learning_rates = [lr for _, lr in scalars(run_dir, "charts/learning_rate")]
    assert learning_rates == [pytest.approx(1e-3), pytest.approx(5e-4)]  # Adam's, annealed linearly to 0
    assert len([p for p in run_dir.iterdir() if p.name.startswith("events.out.tfevents")]) == 1  # rank 0 alone
    assert result.stderr.count("model saved") == 1


@pytest.mark.slow
def test_same_seed_same_losses_and_evaluation_draws_nothing_from_training(tmp_path):
    # s1 evaluates 2 games at step 20 and at the end; s2 never does. Evaluation plays under its own random
    # streams, so both runs learn the same, loss for loss.
    run_script(*TINY, "--eval-episodes", "2", "--eval-every", "20", "--runs-dir", "out", RUN_NAME, "s1", cwd=tmp_path)
    run_script(*TINY, "--runs-dir", "out", RUN_NAME, "s2", cwd=tmp_path)
    s1, s2 = tmp_path / "out" / "s1", tmp_path / "out" / "s2"
    evaluations = scalars(s1, "eval/episodic_return")
    assert [step for step, _ in evaluations] == [20, 20, 40, 40] and scalars(s2, "eval/episodic_return") == []
    assert all(score >= 0 and score == int(score) for _, score in evaluations)  # raw Breakout scores
    for tag in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/explained_variance"):
        first, second = scalars(s1, tag), scalars(s2, tag)
        assert len(first) == 4 and first == second, tag


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_at_the_next_logging_step(tmp_path):
    import signal

    from conftest import interrupt_when_running

    run_dir = tmp_path / "out" / "i"
    never = str(10**9)  # the run would go on for days and checkpoints only when stopped
    argv = [*TINY, "--total-timesteps", never, "--save-model", "--checkpoint-every", never, "--runs-dir", "out",
            RUN_NAME, "i"]
    result = interrupt_when_running(SCRIPT, argv, run_dir, signal.SIGINT, tmp_path)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    step = checkpoint["global_step"]
    assert 0 < step < 10**9 and step % 10 == 0 and checkpoint["iteration"] == step // 10
    assert result.stderr.strip().splitlines()[-1] == (f"stopped by SIGINT at agent step {step}: checkpoint saved; "
                                                      f"continue with --resume {run_dir.relative_to(tmp_path)}")
    assert "Traceback" not in result.stderr and not (run_dir / "a2c_atari.model").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning-rate", "nan"], "--learning-rate must be a finite number above 0, got nan"),
        (["--learning-rate", "-1"], "--learning-rate must be a finite number above 0, got -1"),
        (["--gamma", "2"], "--gamma must be in [0, 1], got 2"),
        (["--num-steps", "0"], "--num-steps must be at least 1, got 0"),
        (["--ent-coef", "-1"], "--ent-coef must be a finite number of at least 0, got -1"),
        (["--env-id", "NoSuchGame-v4"], "unknown Atari game"),
        (["--run", "ppo.model"], "ppo_atari.py"),
    ],
)
def test_bad_input_ends_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    """In this process (a second each): main() must end in SystemExit(2) after one line; any other
    exception, i.e. a traceback, fails the test."""
    torch.save({"format": 1, "algo": "ppo", "model": {}, "env_id": "BreakoutNoFrameskip-v4", "num_actions": 4},
               tmp_path / "ppo.model")
    line = main_ends_in_one_line(a2c_atari.main, ["a2c_atari.py", *TINY, *argv], tmp_path, monkeypatch, capsys)
    assert message in line


@pytest.mark.slow
def test_bad_input_in_a_real_process_prints_no_traceback(tmp_path):
    result = run_script(*TINY, "--gamma", "2", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: --gamma must be in [0, 1], got 2.0"]
    assert os.listdir(tmp_path) == []
