"""Is EnvPool 1.x a faster env backend here than ale-py's AtariVectorEnv? Random-action steps of both, bare.

Both emulate the same game with the same preprocessing in C++ threads: frame skip 4 (the max of the last two
frames), 84x84 grey, 4 stacked frames, up to 30 no-op starts, FIRE on reset, the 108,000-frame cap, no
sticky actions, no life-loss or reward-clipping work (`wrappers.py` does those in Python on top, the same for
every backend). Each is stepped synchronously with random actions, as the scripts' rollouts step it, at the
numbers of envs of the scripts (8: PPO, PQN; 16: A2C; 128: Gallici et al.'s PQN shape) and with 1 and 2 threads.
The figure is agent steps/s (one agent step = one env's step = 4 frames), after a warm-up, interleaved
rounds, median.

It needs EnvPool beside ale-py, in a virtual environment of its own (EnvPool is not a dependency of the
project; the numbers below decide whether it should be):

    python3 -m venv /tmp/envpool-venv && /tmp/envpool-venv/bin/pip install envpool==1.2.5 ale-py==0.12.1 gymnasium numpy
    /tmp/envpool-venv/bin/python benchmark/studies/envpool_speed.py --game pong

Pause other busy processes first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def make_ale(game: str, num_envs: int, threads: int):
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    return AtariVectorEnv(game, num_envs, num_threads=threads, max_num_frames_per_episode=108_000,
                          repeat_action_probability=0.0, img_height=84, img_width=84, stack_num=4, frameskip=4,
                          noop_max=30, episodic_life=False, life_loss_info=False, reward_clipping=False,
                          use_fire_reset=True, autoreset_mode=AutoresetMode.NEXT_STEP)


def make_envpool(game: str, num_envs: int, threads: int):
    import envpool

    task = "".join(part.capitalize() for part in game.split("_")) + "-v5"
    return envpool.make(task, env_type="gymnasium", num_envs=num_envs, num_threads=threads, max_episode_steps=27_000,
                        repeat_action_probability=0.0, img_height=84, img_width=84, stack_num=4, frame_skip=4,
                        noop_max=30, episodic_life=False, reward_clip=False, use_fire_reset=True, gray_scale=True,
                        seed=0)  # EnvPool takes its seed here; reset(seed=...) ignores it


def steps_per_second(make, game: str, num_envs: int, threads: int, seconds: float) -> float:
    env = make(game, num_envs, threads)
    rng = np.random.default_rng(0)
    env.reset(**({} if make is make_envpool else dict(seed=0)))
    actions = env.action_space.n if hasattr(env.action_space, "n") else env.single_action_space.n
    for _ in range(50):  # warm-up
        env.step(rng.integers(actions, size=num_envs))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(rng.integers(actions, size=num_envs))
        steps += num_envs
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="pong", help="ale-py's ROM name (pong, breakout)")
    parser.add_argument("--envs", default="8,16,128", help="comma-separated numbers of envs")
    parser.add_argument("--threads", default="1,2", help="comma-separated numbers of threads")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of stepping per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    opts = parser.parse_args()
    import ale_py
    import envpool

    backends = {f"ale-py {ale_py.__version__} AtariVectorEnv": make_ale, f"EnvPool {envpool.__version__}": make_envpool}
    cells = [(n, t) for n in map(int, opts.envs.split(",")) for t in map(int, opts.threads.split(",")) if t <= n]
    rates = {(b, n, t): [] for b in backends for n, t in cells}
    for _ in range(opts.rounds):
        for n, t in cells:
            for name, make in backends.items():
                rates[name, n, t].append(steps_per_second(make, opts.game, n, t, opts.seconds))
    print(f"{opts.game}: random-action agent steps/s, median of {opts.rounds} interleaved rounds of {opts.seconds:g} s; "
          f"{os.cpu_count()} cores\n")
    print("| envs | threads | " + " | ".join(backends) + " | EnvPool / ale-py |")
    print("|---:|---:|" + "---:|" * (len(backends) + 1))
    for n, t in cells:
        ale, pool = (statistics.median(rates[b, n, t]) for b in backends)
        print(f"| {n} | {t} | {ale:,.0f} | {pool:,.0f} | {pool / ale:.2f}x |")


if __name__ == "__main__":
    main()
