"""The environment contract of wrappers.py, on the real emulator, on every backend.

Each test asserts one promise of the module docstring. Backends are parametrized so that "native" (ale-py's
C++ vector env) and the gymnasium backends are held to the same contract.
"""

import subprocess
import sys
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest

import wrappers

ROOT = Path(__file__).resolve().parents[1]
ALL_BACKENDS = ["native", "sync", "async"]


def vec(backend, game="BreakoutNoFrameskip-v4", num_envs=2, **kwargs):
    return wrappers.make_vector_env(game, num_envs, backend=backend, **kwargs)


def play(envs, steps, rng, action=None):
    """Step with random (or fixed) actions; yield each step's results."""
    for _ in range(steps):
        if action is None:
            actions = rng.integers(0, envs.single_action_space.n, envs.num_envs)
        else:
            actions = np.full(envs.num_envs, action, dtype=np.int64)
        yield envs.step(actions)


@pytest.mark.parametrize("env_id", ["BreakoutNoFrameskip-v4", "ALE/Breakout-v5", "breakout"])
def test_env_id_forms_name_the_same_game(env_id):
    assert wrappers.resolve_game(env_id) == "breakout"
    assert wrappers.resolve_game("MsPacmanNoFrameskip-v4") == "ms_pacman"


@pytest.mark.parametrize("env_id", ["Breakoutt-v4", "ALE/NoSuchGame-v5", "CartPole-v1", ""])
def test_unknown_env_id_is_one_line_that_says_what_to_do(env_id):
    with pytest.raises(wrappers.EnvIdError) as err:
        wrappers.make_vector_env(env_id, 1)
    message = str(err.value)
    assert "\n" not in message and env_id in message and "--list-games" in message


def test_list_games_prints_both_id_forms():
    out = subprocess.run(
        [sys.executable, "wrappers.py", "--list-games"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "BreakoutNoFrameskip-v4  ALE/Breakout-v5" in out.splitlines()
    assert len(out.splitlines()) > 50


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_observations_are_uint8_stacks_of_84x84_oldest_first(backend):
    envs = vec(backend, num_envs=3)
    assert envs.single_observation_space.shape == (4, 84, 84)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
    # Zero padding after reset: only the newest frame is real.
    assert (obs[:, :3] == 0).all() and (obs[:, 3] > 0).any()
    rng = np.random.default_rng(0)
    for next_obs, *_ in play(envs, 20, rng):
        # Each stack drops its oldest frame and appends the newest at the end (no env resets this early).
        np.testing.assert_array_equal(next_obs[:, :3], obs[:, 1:])
        obs = next_obs
    envs.close()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_each_agent_step_is_four_emulator_frames(backend):
    envs = vec(backend, noop_max=0)
    _, info = envs.reset(seed=1)
    frames = info["episode_frame_number"].copy()
    rng = np.random.default_rng(1)
    for _, _, terminated, truncated, info in play(envs, 50, rng):
        assert not info["game_over"].any() and not truncated.any()
        np.testing.assert_array_equal(info["episode_frame_number"] - frames, 4)
        frames = info["episode_frame_number"].copy()
    envs.close()


def test_observation_is_the_max_of_the_last_two_frames_warped_to_84x84():
    """Replay the same actions on a raw frame-by-frame emulator and rebuild the newest frame by hand."""
    env = wrappers.make_env("breakout", noop_max=0, episodic_life=False, clip_reward=False)
    raw = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env.reset(seed=5)
    raw.reset(seed=5)
    raw.step(1)  # FIRE at reset, as FireOnReset does
    rng = np.random.default_rng(5)
    differs_from_last_frame = False
    for _ in range(40):
        action = int(rng.integers(0, 4))
        obs, *_ = env.step(action)
        screens = []
        for _ in range(wrappers.FRAME_SKIP):
            raw.step(action)
            screens.append(raw.unwrapped.ale.getScreenGrayscale())
        pooled = np.maximum(screens[-2], screens[-1])
        expected = cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(obs[-1], expected)
        last_only = cv2.resize(screens[-1], (84, 84), interpolation=cv2.INTER_AREA)
        differs_from_last_frame |= not np.array_equal(expected, last_only)
    assert differs_from_last_frame, "the max-pool never mattered: the test did not exercise it"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_noop_starts_stay_within_bounds(backend):
    """Frames played at reset: 1 FIRE frame plus the no-ops (bounds differ by backend, see wrappers.py)."""
    envs = vec(backend, num_envs=4)
    _, info = envs.reset(seed=0)
    noops = list(info["episode_frame_number"] - 1)
    for _ in range(24):  # later resets draw from the same seeded stream, without reloading the ROM
        _, info = envs.reset()
        noops.extend(info["episode_frame_number"] - 1)
    low, high = (0, 28) if backend == "native" else (1, 30)
    assert min(noops) >= low and max(noops) <= high
    assert len(set(noops)) > 15, "no-op counts are not random"
    _, info = vec(backend, noop_max=0).reset(seed=0)
    np.testing.assert_array_equal(info["episode_frame_number"], 1)  # FIRE only
    envs.close()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_fire_is_pressed_at_reset_only_where_the_game_has_fire(backend):
    _, info = vec(backend, "FreewayNoFrameskip-v4", noop_max=0).reset(seed=0)  # actions: NOOP, UP, DOWN
    np.testing.assert_array_equal(info["episode_frame_number"], 0)
    # In Breakout the ball waits for FIRE: doing nothing after reset still loses a life only if FIRE
    # was pressed for us.
    envs = vec(backend, noop_max=0)
    envs.reset(seed=0)
    lost = np.zeros(envs.num_envs, bool)
    for _, _, terminated, _, _ in play(envs, 60, None, action=0):
        lost |= terminated
    assert lost.all()
    envs.close()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_learning_reward_is_the_sign_and_the_raw_score_is_kept(backend):
    envs = vec(backend, "SpaceInvadersNoFrameskip-v4", num_envs=2)
    envs.reset(seed=0)
    rewards, raw = [], []
    for _, reward, _, _, info in play(envs, 300, np.random.default_rng(0)):
        rewards.append(reward)
        raw.append(info["raw_reward"])
    rewards, raw = np.concatenate(rewards), np.concatenate(raw)
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
    assert raw.max() > 1, "no reward above 1: the test did not exercise clipping"
    np.testing.assert_array_equal(rewards, np.sign(raw))
    envs.close()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_life_loss_terminates_without_resetting_the_game(backend):
    envs = vec(backend, num_envs=1, noop_max=0)
    _, info = envs.reset(seed=0)
    lives, frames = info["lives"].copy(), info["episode_frame_number"].copy()
    seen = 0
    for _, _, terminated, truncated, info in play(envs, 400, np.random.default_rng(0)):
        if info["game_over"][0] or truncated[0]:
            break
        # The game goes on across a life loss: frames keep counting, no reset step.
        np.testing.assert_array_equal(info["episode_frame_number"], frames + 4)
        if terminated[0]:
            assert info["lives"][0] == lives[0] - 1
            seen += 1
        else:
            assert info["lives"][0] == lives[0]
        lives, frames = info["lives"].copy(), info["episode_frame_number"].copy()
    assert seen >= 2


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_game_over_is_followed_by_one_reset_step(backend):
    envs = vec(backend, num_envs=1, noop_max=0)
    envs.reset(seed=0)
    after_game_over = False
    for obs, reward, terminated, truncated, info in play(envs, 1000, np.random.default_rng(2)):
        if after_game_over:
            assert info["episode_frame_number"][0] == 1 and reward[0] == 0 and not terminated[0]
            assert (obs[0, :3] == 0).all(), "the first observation of a new game is zero-padded"
            break
        if info["game_over"][0]:
            assert terminated[0] and wrappers.reset_next(terminated, truncated, info)[0]
            after_game_over = True
    assert after_game_over


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_frame_cap_truncates_and_then_resets(backend):
    cap = 400
    envs = vec(backend, num_envs=1, noop_max=0, max_episode_frames=cap)
    envs.reset(seed=0)
    # NOOP only: the ball is launched once by FIRE at reset, then the game idles until the cap.
    for step, (_, _, terminated, truncated, info) in enumerate(play(envs, 200, None, action=0), 1):
        if truncated[0]:
            break
    assert truncated[0] and not info["game_over"][0]
    assert wrappers.reset_next(terminated, truncated, info)[0]
    # The C++ env counts frames after the reset frames, gymnasium's ALE from the start of the game.
    assert step == (cap // 4 if backend == "native" else -(-(cap - 1) // 4))
    _, _, _, truncated, info = envs.step(np.zeros(1, dtype=np.int64))
    assert not truncated[0] and info["episode_frame_number"][0] == 1  # the reset step
    envs.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "sync"])
def test_sticky_actions_repeat_at_the_given_rate(backend):
    """FIRE at reset launches Breakout's ball unless the emulator repeats the previous action (NOOP)
    instead, which it does with probability p: so about 1 - p of the games start their ball.
    (async is the sync stack in subprocesses, covered by the other tests.)"""
    launched = {}
    for p in (0.0, 0.25, 1.0):
        envs = vec(backend, num_envs=16, noop_max=0, repeat_action_probability=p)
        envs.reset(seed=0)
        games = []
        for _ in range(4 if p == 0.25 else 1):  # 64 games at p = 0.25; unseeded resets continue the stream
            lost = np.zeros(envs.num_envs, bool)
            for _, _, terminated, _, _ in play(envs, 60, None, action=0):  # a launched ball is lost by ~25
                lost |= terminated
            games.extend(lost)
            envs.reset()
        launched[p] = np.mean(games)
        envs.close()
    assert launched[0.0] == 1.0 and launched[1.0] == 0.0
    # Binomial(64, 0.75) at p=0.25, 4 standard deviations either side.
    assert 0.53 <= launched[0.25] <= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_episode_return_is_the_raw_score_of_the_whole_game(backend):
    envs = vec(backend, num_envs=2)
    envs.reset(seed=3)
    running = np.zeros(2)
    skip = np.zeros(2, bool)  # a reset step starts a new game and belongs to no game
    finished = 0
    for _, _, terminated, truncated, info in play(envs, 1500, np.random.default_rng(3)):
        running[~skip] += info["raw_reward"][~skip]
        running[skip] = 0
        ended = info.get("_episode", np.zeros(2, bool))
        np.testing.assert_array_equal(ended, wrappers.reset_next(terminated, truncated, info))
        for i in np.flatnonzero(ended):
            assert info["episode"]["r"][i] == running[i]
            finished += 1
        skip = wrappers.reset_next(terminated, truncated, info)
    assert finished >= 2
    envs.close()


@pytest.mark.slow
def test_native_and_gymnasium_backends_agree_without_noops():
    """With no-ops off, the same seed and the same actions, the C++ and Python stacks are identical:
    observations, learning and raw rewards, terminations (life losses too) and truncations, across game
    overs and resets."""
    native, sync = vec("native", num_envs=3, noop_max=0), vec("sync", num_envs=3, noop_max=0)
    a, _ = native.reset(seed=7)
    b, _ = sync.reset(seed=7)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(7)
    games = 0
    for _ in range(800):
        actions = rng.integers(0, 4, 3)
        ra, rb = native.step(actions), sync.step(actions)
        for x, y in zip(ra[:4], rb[:4]):
            np.testing.assert_array_equal(x, y)
        for key in ("raw_reward", "game_over", "lives"):
            np.testing.assert_array_equal(ra[4][key], rb[4][key])
        games += ra[4]["game_over"].sum()
    assert games >= 3


def test_single_env_has_the_learning_rules_too():
    env = wrappers.make_env("breakout", seed=0, noop_max=0)
    obs, info = env.reset()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    lives, life_losses = info["lives"], 0
    for _ in range(2000):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert reward in (-1.0, 0.0, 1.0) and "raw_reward" in info
        if terminated and not info["game_over"]:
            life_losses += 1
            frames = info["episode_frame_number"]
            obs2, info2 = env.reset()  # a life loss does not reset the game
            np.testing.assert_array_equal(obs2, obs)
            _, _, _, _, info3 = env.step(0)
            assert info3["episode_frame_number"] == frames + 4 and info3["lives"] == info["lives"]
        if info["game_over"] or truncated:
            break
    assert life_losses >= 2 and info["game_over"]
    _, info = env.reset()
    assert info["lives"] == lives and info["episode_frame_number"] < 40
