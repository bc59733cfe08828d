"""Agent steps per second of each env backend, beside the bare emulator and bare `AtariVectorEnv`.

    python benchmark/env_throughput.py                  # Breakout, 1/2/8/16 envs, 3 s per measurement
    python benchmark/env_throughput.py --num-envs 8 --seconds 5 --repeats 5

Random actions, whole-process wall clock. Each figure is the best of `--repeats` timed windows (the
least disturbed by other processes on the machine), after a warm-up. One agent step is 4 emulator
frames, so the bare emulator's frames/s are shown as agent steps/s (frames / 4) too.

What the rows are:
  bare ALE (1 core)        one ale_py.ALEInterface, raw frames, no preprocessing: the ceiling per core
  bare AtariVectorEnv      ale-py's C++ vector env with its own preprocessing (clipping, life-loss flag),
                           no Python wrappers: what our native backend is built on
  native / sync / async    wrappers.make_vector_env: our full contract (raw and clipped rewards, life loss
                           kept apart from game over, whole-game statistics) on each backend
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import wrappers  # noqa: E402


def timed(step, num_envs: int, num_actions: int, seconds: float, repeats: int) -> float:
    """Best agent steps/s over `repeats` windows of about `seconds` each."""
    rng = np.random.default_rng(0)
    actions = rng.integers(0, num_actions, (1024, num_envs))
    for i in range(50):  # warm-up: caches, threads, first resets
        step(actions[i % 1024])
    best = 0.0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for i in range(64):
                step(actions[(n + i) % 1024])
            n += 64
        best = max(best, n * num_envs / (time.perf_counter() - start))
    return best


def bare_ale(game: str, seconds: float, repeats: int) -> float:
    """Raw emulator frames per second on one core."""
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per ROM load
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", 0)
    ale.loadROM(ale_py.roms.get_rom_path(game))
    legal = ale.getMinimalActionSet()

    def step(action):
        ale.act(legal[action[0]])
        if ale.game_over():
            ale.reset_game()

    return timed(step, 1, len(legal), seconds, repeats)


def bare_vector(game: str, num_envs: int, threads: int, seconds: float, repeats: int) -> float:
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv(game, num_envs, num_threads=threads, life_loss_info=True)
    envs.reset(seed=0)
    rate = timed(lambda a: envs.step(a), num_envs, envs.single_action_space.n, seconds, repeats)
    envs.close()
    return rate


def ours(env_id: str, backend: str, num_envs: int, threads: int, seconds: float, repeats: int) -> float:
    envs = wrappers.make_vector_env(env_id, num_envs, backend=backend, num_threads=threads)
    envs.reset(seed=0)
    rate = timed(lambda a: envs.step(a), num_envs, envs.single_action_space.n, seconds, repeats)
    envs.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2, 8, 16])
    parser.add_argument("--backends", nargs="+", default=list(wrappers.BACKENDS), choices=wrappers.BACKENDS)
    parser.add_argument("--threads", type=int, default=0, help="native threads (0: one per env, at most one per core)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per figure; the best is shown")
    args = parser.parse_args()
    game = wrappers.resolve_game(args.env_id)
    cores = len(os.sched_getaffinity(0))

    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
    print(f"# env throughput, {args.env_id}, random actions; {cores} cores ({cpu or platform.processor()}); "
          f"load average at start {os.getloadavg()[0]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    frames = bare_ale(game, args.seconds, args.repeats)
    print(f"bare ALE, 1 core: {frames:,.0f} frames/s = {frames / wrappers.FRAME_SKIP:,.0f} agent steps/s\n")

    print("| num_envs | bare AtariVectorEnv | " + " | ".join(f"{b} (ours)" for b in args.backends)
          + " | contract cost vs bare | native / sync |")
    print("|---:|---:|" + "---:|" * len(args.backends) + "---:|---:|")
    for n in args.num_envs:
        threads = args.threads or min(n, cores)
        bare = bare_vector(game, n, threads, args.seconds, args.repeats)
        rates = {b: ours(args.env_id, b, n, threads, args.seconds, args.repeats) for b in args.backends}
        cost = f"{(1 - rates['native'] / bare) * 100:+.1f}%" if "native" in rates else "-"
        ratio = f"{rates['native'] / rates['sync']:.2f}x" if {"native", "sync"} <= rates.keys() else "-"
        print(f"| {n} | {bare:,.0f} | " + " | ".join(f"{rates[b]:,.0f}" for b in args.backends)
              + f" | {cost} | {ratio} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}. 'contract cost' is how much slower our native "
          "backend is than bare AtariVectorEnv (negative: faster, i.e. within noise).")


if __name__ == "__main__":
    main()
