"""DeepMind Atari preprocessing and the vector-env factory: the one module every script shares.

Scores are only comparable when every algorithm sees the same game, so the environment layer lives here
once, and nothing else does. It follows Mnih et al. 2015 ("Human-level control through deep reinforcement
learning", Nature) with the evaluation details of Machado et al. 2018 (arXiv 1709.06009).

The pipeline, in order (each step says what it does to reset / terminated / truncated):

  game level (one emulator)
    1. ALE emulator, raw frames, minimal action set, optional sticky actions (repeat_action_probability,
       Machado et al. 2018), a cap of 108,000 emulator frames per game reported as *truncated*.
    2. FIRE at reset, in games whose action set has FIRE (Breakout's ball waits for it). reset only.
    3. 1-30 random no-ops at reset (Mnih et al. 2015), frame skip 4 with a max over the last two frames
       (the Atari flickers: some sprites are drawn on alternate frames), 84x84 grayscale.
    4. A stack of the last 4 frames, oldest first, zero-padded after reset.
  learning level (the vector env the scripts see)
    5. Episode statistics of the whole game: the raw score and the length, recorded *before* steps 6-7 so
       the logged score is the real game score, never a per-life or clipped one.
    6. Loss of a life sets *terminated* (stop bootstrapping) but does not reset the game; only a game
       over does (Mnih et al. 2015; "episodic life").
    7. The sign of the reward for learning; the raw reward stays in info["raw_reward"].

Steps 1-4 run in C++ inside ale-py's `AtariVectorEnv` (backend "native", the default and the fastest), or
in Python over gymnasium's `AtariPreprocessing` and `FrameStackObservation` (backends "sync" and "async").
Steps 5-7 are vector wrappers applied to every backend, so all backends keep one contract:

    obs, info = envs.reset(seed=seed)               # uint8 (N, 4, 84, 84); env i is seeded seed + i
    obs, reward, terminated, truncated, info = envs.step(actions)
      reward            float32, sign of the game reward, for learning
      info["raw_reward"] float32, the game reward of this step
      terminated        a life was lost or the game is over: do not bootstrap
      truncated         the frame cap was reached: bootstrap from this step's observation
      info["game_over"] the game itself ended (not a mere life loss)
      info["_episode"], info["episode"]["r"], info["episode"]["l"]: at the step a game ends, its raw
                        score and length in agent steps

Autoreset is gymnasium 1.x's NEXT_STEP mode: when `reset_next(...)` is true for env i at step t (game over
or truncation), step t+1 of env i is a *reset step*: its action is ignored, its reward is 0 and it returns
the first observation of a new game. A life loss is followed by no reset step: the game goes on.

Where the backends differ, and why (tests/test_wrappers.py pins each difference down):
  - No-op starts: gymnasium draws 1..noop_max no-ops after the FIRE frame; ale-py's C++ env draws
    0..noop_max-1 and takes one off for the FIRE frame. With noop_max=0 both do none, and then the two
    backends give identical observations and rewards for the same actions.
  - The frame cap: ale-py's C++ env counts frames from the end of the reset no-ops, gymnasium's ALE from
    the start of the game (no-ops included), so a capped game is up to 31 frames shorter there.
"""

from __future__ import annotations

import functools
import re
import sys

import ale_py
import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode, VectorWrapper
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
from gymnasium.wrappers.vector import RecordEpisodeStatistics

gym.register_envs(ale_py)

BACKENDS = ("native", "sync", "async")
FRAME_SKIP = 4  # emulator frames per agent step (Mnih et al. 2015)
FRAME_STACK = 4  # frames in one observation (Mnih et al. 2015)
SCREEN_SIZE = 84  # pixels per side of the warped frame (Mnih et al. 2015)
NOOP_MAX = 30  # most random no-ops at reset (Mnih et al. 2015)
MAX_EPISODE_FRAMES = 108_000  # 30 minutes of play at 60 Hz (Machado et al. 2018)


def frames_to_steps(frames: int, frame_skip: int = FRAME_SKIP) -> int:
    """Emulator frames to agent steps: papers count frames, our flags and logs count agent steps."""
    return frames // frame_skip


class EnvIdError(ValueError):
    """An env id that names no Atari game; its message is one line a user can act on."""


def _rom_to_name(rom: str) -> str:
    return rom.title().replace("_", "")  # "ms_pacman" -> "MsPacman", as ale-py registers its ids


def resolve_game(env_id: str) -> str:
    """The ale-py ROM id ("breakout") for `BreakoutNoFrameskip-v4`, `ALE/Breakout-v5` or `breakout`.

    The id names a game only: preprocessing and sticky actions come from our own settings, so
    `ALE/Breakout-v5` here does not imply v5's default sticky actions or frame skip.
    """
    roms = {_rom_to_name(rom): rom for rom in ale_py.roms.get_all_rom_ids()}
    match = re.fullmatch(r"ALE/(\w+)-v5|(\w+)NoFrameskip-v4", env_id)
    if match:
        name = match.group(1) or match.group(2)
        if name in roms:
            return roms[name]
    elif env_id in roms.values():
        return env_id
    raise EnvIdError(
        f"unknown Atari game '{env_id}': use a form like BreakoutNoFrameskip-v4 or ALE/Breakout-v5; "
        f"list the games with `python wrappers.py --list-games`"
    )


def life_lost(lives: np.ndarray, prev_lives: np.ndarray, game_over: np.ndarray) -> np.ndarray:
    """True where a life was lost and the game goes on (the last life ends the game instead)."""
    return (lives < prev_lives) & ~game_over


class FireOnReset(gym.Wrapper):
    """Press FIRE for one emulator frame after each reset, in games whose action set has FIRE.

    Some games (Breakout) wait for FIRE before play starts; an agent that has not yet learned to press it
    would see no-ops forever. The idea is from OpenAI Baselines' FireResetEnv; we press it once, for one
    frame, exactly as ale-py's C++ vector env does, so the backends stay identical.
    Changes reset() only (one more frame); step, terminated and truncated are untouched.
    Must wrap the raw frameskip=1 env, under AtariPreprocessing, so the no-ops come after FIRE.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.fire_action = meanings.index("FIRE") if "FIRE" in meanings else None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self.fire_action is not None:
            obs, _, terminated, truncated, info = self.env.step(self.fire_action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class EpisodicLife(gym.Wrapper):
    """Single env: the loss of a life ends the learning episode, but only a game over resets the game.

    Mnih et al. 2015 (and Baselines' EpisodicLifeEnv). step: terminated becomes True on a life loss;
    info["game_over"] tells a real game over. reset: after a life loss (and no game over) the game is not
    reset and no emulator frame passes: the current observation is returned again.
    The vector env applies the same rule with `VectorEpisodicLife`; both use `life_lost`.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives, self.game_over, self.last_obs = 0, True, None

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lost = life_lost(np.asarray(info["lives"]), np.asarray(self.lives), np.asarray(terminated))
        self.lives, self.game_over, self.last_obs = info["lives"], terminated or truncated, obs
        info["game_over"] = terminated
        return obs, reward, terminated or bool(lost), truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            self.last_obs, info = self.env.reset(**kwargs)
            self.lives, self.game_over = info["lives"], False
            return self.last_obs, info
        return self.last_obs, {"lives": self.lives}


class SignReward(gym.Wrapper):
    """Single env: learn from the sign of the reward (Mnih et al. 2015), keep the raw one in info.

    Clipping lets one learning rate serve every game. Changes the reward only; info["raw_reward"] is the
    game's own. The vector env does the same in `VectorSignReward`.
    """

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["raw_reward"] = reward
        return obs, float(np.sign(reward)), terminated, truncated, info


def make_env(
    env_id: str,
    seed: int | None = None,
    *,
    noop_max: int = NOOP_MAX,
    frame_skip: int = FRAME_SKIP,
    repeat_action_probability: float = 0.0,
    max_episode_frames: int = MAX_EPISODE_FRAMES,
    episodic_life: bool = True,
    clip_reward: bool = True,
    render_mode: str | None = None,
) -> gym.Env:
    """One DeepMind-preprocessed Atari game: uint8 observations of shape (4, 84, 84), oldest frame first.

    `seed`, when given, seeds the emulator and the no-op draws through a first reset(seed=seed).
    `render_mode="rgb_array"` lets env.render() return the colour screen (for videos).
    `episodic_life` and `clip_reward` add the learning-level rules for single-env use; the vector factory
    builds games without them and applies its vector versions to every backend alike.
    """
    game = resolve_game(env_id)
    env = gym.make(
        f"ALE/{_rom_to_name(game)}-v5",
        frameskip=1,  # AtariPreprocessing skips frames and max-pools itself
        repeat_action_probability=repeat_action_probability,
        full_action_space=False,
        max_num_frames_per_episode=max_episode_frames,  # ALE reports the cap as truncation
        render_mode=render_mode,
    )
    env = FireOnReset(env)
    env = AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip, screen_size=SCREEN_SIZE)
    env = FrameStackObservation(env, FRAME_STACK, padding_type="zero")
    if episodic_life:
        env = EpisodicLife(env)
    if clip_reward:
        env = SignReward(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


class VectorEpisodicLife(VectorWrapper):
    """Vector env: a lost life sets terminated, the game goes on; info["game_over"] marks real game overs.

    The same rule as `EpisodicLife`, on arrays. The backends below it terminate only at game over, so they
    autoreset only then, and a life loss is followed by no reset step.
    """

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.lives = np.asarray(info["lives"]).copy()
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        lives = np.asarray(info["lives"])
        info["game_over"] = terminated
        terminated = terminated | life_lost(lives, self.lives, terminated)
        self.lives = lives.copy()
        return obs, reward, terminated, truncated, info


class VectorSignReward(VectorWrapper):
    """Vector env: the sign of the reward for learning (Mnih et al. 2015); info["raw_reward"] keeps the game's."""

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        info["raw_reward"] = np.asarray(reward, dtype=np.float32)
        return obs, np.sign(info["raw_reward"]), terminated, truncated, info


def reset_next(terminated: np.ndarray, truncated: np.ndarray, info: dict) -> np.ndarray:
    """Where the next step is a reset step (NEXT_STEP autoreset): after a game over or a truncation."""
    return info["game_over"] | truncated


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int | None = None,
    *,
    backend: str = "native",
    num_threads: int = 0,
    noop_max: int = NOOP_MAX,
    frame_skip: int = FRAME_SKIP,
    repeat_action_probability: float = 0.0,
    max_episode_frames: int = MAX_EPISODE_FRAMES,
) -> gym.vector.VectorEnv:
    """`num_envs` preprocessed games behind one contract (see the module docstring), on any backend.

    backend: "native" runs each game in ale-py's C++ `AtariVectorEnv` on `num_threads` threads (0: one per
    env, at most one per core); "sync" steps gymnasium envs one after another in this process; "async"
    steps them in one subprocess each (what users who ask for multiprocessing expect).
    `seed`, when given, is used by the first reset: env i gets seed + i.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown env backend '{backend}': choose one of {', '.join(BACKENDS)}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    game = resolve_game(env_id)
    if backend == "native":
        envs = AtariVectorEnv(
            game,
            num_envs,
            num_threads=num_threads or min(num_envs, _cpu_count()),
            max_num_frames_per_episode=max_episode_frames,
            repeat_action_probability=repeat_action_probability,
            img_height=SCREEN_SIZE,
            img_width=SCREEN_SIZE,
            stack_num=FRAME_STACK,
            frameskip=frame_skip,
            noop_max=noop_max,
            episodic_life=False,  # life loss is VectorEpisodicLife's job, the same on every backend
            life_loss_info=False,
            reward_clipping=False,  # clipping is VectorSignReward's, so the raw reward survives
            use_fire_reset=True,
            autoreset_mode=AutoresetMode.NEXT_STEP,
        )
    else:
        make_one = functools.partial(
            make_env,
            env_id,
            noop_max=noop_max,
            frame_skip=frame_skip,
            repeat_action_probability=repeat_action_probability,
            max_episode_frames=max_episode_frames,
            episodic_life=False,
            clip_reward=False,
        )
        if backend == "sync":
            envs = gym.vector.SyncVectorEnv([make_one] * num_envs)
        else:
            envs = gym.vector.AsyncVectorEnv([make_one] * num_envs, context="spawn")
    envs = RecordEpisodeStatistics(envs)
    envs = VectorEpisodicLife(envs)
    envs = VectorSignReward(envs)
    if seed is not None:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
    return envs


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    if sys.argv[1:] == ["--list-games"]:
        for rom in sorted(ale_py.roms.get_all_rom_ids()):
            print(f"{_rom_to_name(rom)}NoFrameskip-v4  ALE/{_rom_to_name(rom)}-v5")
    else:
        print("usage: python wrappers.py --list-games", file=sys.stderr)
        sys.exit(2)
