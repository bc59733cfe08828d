"""--overlap (issue 12): the policy acts for one half of the envs while the other half's games step, and the
run stays exactly on-policy: the same seed gives the serial loop's transitions, env by env, in the same order.

Each script's own main() runs twice in this process, serial and overlapped, on a tiny budget of Breakout long
enough for life losses and game overs. The test watches it at two places and changes nothing in between:
  - at the env boundary, every part of the envs is wrapped in a recorder: for each env of the whole, the
    observations it returned, the actions it was sent, its rewards and done flags, in order;
  - at the maths: the inputs of the advantage estimate (the rollout's rewards, flags and values, column by
    column) and of every loss call (log-probabilities, values, returns: they come from the obs, actions and
    log-prob buffers).
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import pytest
import torch
from gymnasium.vector import VectorWrapper

import a2c_atari
import ppo_atari
import wrappers
from conftest import main_ends_in_one_line, scalars

PPO = ["--num-envs", "4", "--num-steps", "64", "--num-minibatches", "2", "--update-epochs", "1",
       "--total-timesteps", "1024"]  # 4 updates, 256 steps per env
A2C = ["--num-envs", "4", "--num-steps", "8", "--total-timesteps", "1024", "--log-every", "32"]  # 32 updates
COMMON = ["--eval-episodes", "0", "--no-progress", "--torch-threads", "1", "--env-threads", "2",
          "--no-flush-denormal", "--runs-dir", "out"]  # flush-denormal is process-wide: leave it off here


class Recorder(VectorWrapper):
    """One part of a script's envs, recording per env of the whole (its columns `cols`) what the loop sent it
    and got back: [("obs", first observation)], then per step ("step", action, obs, reward, terminated,
    truncated, game over)."""

    def __init__(self, env, cols: slice, log: dict[int, list]):
        super().__init__(env)
        self.cols, self.log, self.actions = cols, log, None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for j, i in enumerate(range(self.cols.start, self.cols.stop)):
            self.log.setdefault(i, []).append(("obs", obs[j].copy()))
        return obs, info

    def send(self, actions):
        self.actions = actions.copy()
        self.env.send(actions)

    def recv(self):
        obs, reward, terminated, truncated, info = result = self.env.recv()
        for j, i in enumerate(range(self.cols.start, self.cols.stop)):
            self.log[i].append(("step", int(self.actions[j]), obs[j].copy(), float(reward[j]), bool(terminated[j]),
                                bool(truncated[j]), bool(info["game_over"][j])))
        return result


def calls_of(module, name: str, calls: list, monkeypatch) -> None:
    """Record the tensor arguments of every call of module.name (copies: buffers are reused)."""
    real = getattr(module, name)

    def recording(*args, **kwargs):
        calls.append([a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)


def run(script, argv: list[str], name: str, tmp_path, monkeypatch) -> dict:
    """main() of `script` in this process; what the recorders and the recorded calls saw."""
    log: dict[int, list] = {}
    make_parts = wrappers.make_vector_env_parts

    def recorded_parts(*args, **kwargs):
        return [(Recorder(envs, cols, log), cols) for envs, cols in make_parts(*args, **kwargs)]

    advantage_calls, loss_calls = [], []
    with monkeypatch.context() as m:
        m.setattr(wrappers, "make_vector_env_parts", recorded_parts)
        advantages, loss = ("compute_gae", "ppo_loss") if script is ppo_atari else ("compute_advantages", "a2c_loss")
        calls_of(script, advantages, advantage_calls, m)
        calls_of(script, loss, loss_calls, m)
        m.setattr(sys, "argv", [f"{script.__name__}.py", *argv, *COMMON, "--run-name", name])
        m.chdir(tmp_path)
        threads, handlers = torch.get_num_threads(), [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            script.main()
        finally:
            torch.set_num_threads(threads)
            signal.signal(signal.SIGINT, handlers[0])
            signal.signal(signal.SIGTERM, handlers[1])
    return dict(log=log, advantage_calls=advantage_calls, loss_calls=loss_calls,
                returns=scalars(tmp_path / "out" / name, "charts/episodic_return"))


def assert_same_calls(serial: list, overlapped: list) -> None:
    """Flags, actions and counts equal; floats equal within float32 rounding (the network runs on halves)."""
    assert len(serial) == len(overlapped)
    for call, (a, b) in enumerate(zip(serial, overlapped)):
        for x, y in zip(a, b):
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                torch.testing.assert_close(x, y, msg=lambda m: f"call {call}: {m}")
            elif isinstance(x, torch.Tensor):
                assert torch.equal(x, y), f"call {call}"
            else:
                assert x == y, f"call {call}"


@pytest.mark.parametrize("script, argv", [(ppo_atari, PPO), (a2c_atari, A2C)], ids=["ppo", "a2c"])
def test_overlap_collects_the_serial_transitions(script, argv, tmp_path, monkeypatch):
    serial = run(script, argv, "serial", tmp_path, monkeypatch)
    overlapped = run(script, [*argv, "--overlap"], "overlap", tmp_path, monkeypatch)

    # Env by env, the same first observation and then the same (action, observation, reward, flags) steps.
    assert sorted(serial["log"]) == sorted(overlapped["log"]) == [0, 1, 2, 3]
    for i in range(4):
        a, b = serial["log"][i], overlapped["log"][i]
        assert len(a) == len(b) == 1 + 256
        for t, (x, y) in enumerate(zip(a, b)):
            assert x[0] == y[0] and all(np.array_equal(u, v) for u, v in zip(x[1:], y[1:])), f"env {i}, event {t}"
    # The rollouts held what the test is about: life losses, game overs, and the reset steps after them.
    steps = [event for i in range(4) for event in serial["log"][i][1:]]
    assert any(terminated and not game_over for *_, terminated, _, game_over in steps), "no life was lost"
    games = sum(game_over or truncated for *_, truncated, game_over in steps)
    assert games >= 1, "no game ended"

    # The rollout buffers, column by column: rewards, values, the bootstrap value, terminated, episode ends,
    # valid; and every loss call's inputs (log-probabilities and values of the stored obs and actions).
    assert len(serial["advantage_calls"]) == (4 if script is ppo_atari else 32)
    assert_same_calls(serial["advantage_calls"], overlapped["advantage_calls"])
    assert_same_calls(serial["loss_calls"], overlapped["loss_calls"])
    valid = torch.cat([call[5] for call in serial["advantage_calls"]])
    assert not valid.all(), "no reset step in the rollouts"

    # Each finished game is logged once, at the agent step of the job at which it ended (4 per step of 4
    # envs), with the same score in both runs.
    ends = sorted(4 * k for i in range(4) for k, (*_, truncated, game_over) in enumerate(serial["log"][i][1:], 1)
                  if game_over or truncated)
    assert [step for step, _ in serial["returns"]] == ends and len(ends) == games
    assert serial["returns"] == overlapped["returns"]


@pytest.mark.parametrize("script", [ppo_atari, a2c_atari], ids=["ppo", "a2c"])
def test_overlap_needs_an_even_number_of_envs(script, tmp_path, monkeypatch, capsys):
    line = main_ends_in_one_line(script.main, [f"{script.__name__}.py", "--num-envs", "3", "--overlap"], tmp_path,
                                 monkeypatch, capsys)
    assert line == "error: --overlap steps the envs in two halves: --num-envs must be even, got 3"


@pytest.mark.parametrize("script", [ppo_atari, a2c_atari], ids=["ppo", "a2c"])
def test_help_says_overlap_is_off_by_default_and_what_it_changes(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"{script.__name__}.py", "--help"])
    with pytest.raises(SystemExit):
        script.main()
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # tyro's box, rewrapped as one line
    for text in ("--overlap", "two halves", "last bits", "measured slower", "even"):
        assert text in out, text
