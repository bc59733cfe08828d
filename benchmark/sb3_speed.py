"""Agent steps/s of Stable-Baselines3's A2C, PPO or DQN on Atari at the rl-zoo settings, after a warm-up.

A peer for benchmark/throughput.py, which runs this file in a virtual environment of its own
(benchmark/requirements-peers.txt: SB3 2.9.2 on gymnasium 1.4 and ale-py 0.12.1); it imports nothing of
this repository. The settings are those of rl-baselines3-zoo's `hyperparams/{a2c,ppo,dqn}.yml`, section
`atari`: `make_atari_env` (SB3's AtariWrapper: no-op starts, frame skip 4, episodic life, 84x84 grey,
clipped rewards) and `VecFrameStack(n_stack=4)`, the CNN policy, and

    a2c  16 envs x 5 steps, ent_coef 0.01, vf_coef 0.25, RMSpropTFLike(eps=1e-5), lr 7e-4 (SB3's default)
    ppo  8 envs x 128 steps, 4 epochs of minibatches of 256, lr 2.5e-4 and clip 0.1 both annealed linearly
         to 0 (the zoo's lin_2.5e-4 and lin_0.1), vf_coef 0.5, ent_coef 0.01
    dqn  1 env, buffer 100,000, lr 1e-4, batch 32, one update every 4 agent steps, target network copied
         every 1,000 agent steps, epsilon 1 -> 0.01 over the first 10% of the run; learning starts after
         --learning-starts agent steps (the zoo's 100,000 would leave a short run without a single update)

The clock starts at the first rollout that begins at or after --warmup agent steps (by then the first
updates have run and oneDNN has picked its kernels) and stops when learning ends, so the window holds
whole rollouts with their updates. The last line printed is one JSON object: steps, window_steps,
window_seconds, sps (agent steps/s in the window) and sps_whole (over the whole of `learn`).

    python benchmark/sb3_speed.py --algo ppo --steps 16384 --warmup 1024

With `--scores FILE` it is also a learning run: every finished game (whole games, all lives, raw score, as
SB3's Monitor counts them) is appended to FILE as CSV `agent_step,score,length_frames,seconds`, written as
it happens, so a run that is stopped keeps what it played (FILE must not exist yet: SB3 cannot resume, so
a second run would mix its games into the first's). When learning ends, the last line printed is
also written beside it (FILE with the suffix .json), with the game, the seed and SB3's version: its
presence marks the run finished. `report.py --extract-peer FILE` makes a summary of the two, so that the
run stands in the results table and the curves beside ours:

    python benchmark/sb3_speed.py --algo a2c --steps 2000000 --warmup 80 --scores sb3_a2c_breakout/scores.csv

`--minutes M` ends learning after M minutes of wall-clock (the schedules still span --steps), for a curve of
what a fixed time buys (the rl-zoo budget of 10M agent steps, stopped at 60 minutes):

    python benchmark/sb3_speed.py --algo ppo --env-id PongNoFrameskip-v4 --steps 10000000 --warmup 1024 \
        --minutes 60 --scores sb3_ppo_pong_60min/scores.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("a2c", "ppo", "dqn"), required=True)
    parser.add_argument("--steps", type=int, required=True, help="agent steps of the whole run")
    parser.add_argument("--warmup", type=int, required=True, help="agent steps before the clock starts")
    parser.add_argument("--learning-starts", type=int, default=1_000, help="dqn: agent steps before the first update")
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=None,
                        help="end learning after this many minutes of wall-clock (the schedules still span --steps; "
                             "the last rollout may be cut short)")
    parser.add_argument("--scores", help="append every finished game to this CSV (agent_step,score,length_frames,seconds)")
    opts = parser.parse_args()
    if opts.minutes is not None and opts.minutes <= 0:
        parser.error(f"--minutes must be above 0, got {opts.minutes}")
    if opts.warmup >= opts.steps:
        parser.error(f"--warmup {opts.warmup} leaves nothing of --steps {opts.steps} to measure")
    for path in (Path(opts.scores), Path(opts.scores).with_suffix(".json")) if opts.scores else ():
        if path.exists():
            parser.error(f"--scores: '{path}' exists (a run's games); give a new file, or move it away first")

    import ale_py
    import gymnasium as gym
    import stable_baselines3
    from stable_baselines3 import A2C, DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)  # the Atari ids

    class Clock(BaseCallback):
        """Marks the time at the first rollout that starts at or after the warm-up, and at the end."""

        def __init__(self, warmup: int):
            super().__init__()
            self.warmup = warmup
            self.mark: tuple[int, float] | None = None
            self.end: tuple[int, float] | None = None

        def _on_rollout_start(self) -> None:
            if self.mark is None and self.num_timesteps >= self.warmup:
                self.mark = (self.num_timesteps, time.perf_counter())

        def _on_step(self) -> bool:
            if scores is not None:
                for info in self.locals["infos"]:
                    if "episode" in info:  # SB3's Monitor, under the AtariWrapper: a whole game, raw score
                        game = info["episode"]
                        scores.write(f"{self.num_timesteps},{game['r']},{game['l']},{game['t']}\n")
                        scores.flush()
            return opts.minutes is None or time.perf_counter() - start < 60 * opts.minutes

        def _on_training_end(self) -> None:
            self.end = (self.num_timesteps, time.perf_counter())

    def linear(start: float):
        return lambda progress_remaining: progress_remaining * start  # 1 at the start, 0 at the end

    n_envs = {"a2c": 16, "ppo": 8, "dqn": 1}[opts.algo]
    env = VecFrameStack(make_atari_env(opts.env_id, n_envs=n_envs, seed=opts.seed), n_stack=4)
    if opts.algo == "a2c":
        model = A2C("CnnPolicy", env, ent_coef=0.01, vf_coef=0.25, seed=opts.seed,
                    policy_kwargs=dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5)))
    elif opts.algo == "ppo":
        model = PPO("CnnPolicy", env, n_steps=128, n_epochs=4, batch_size=256, learning_rate=linear(2.5e-4),
                    clip_range=linear(0.1), vf_coef=0.5, ent_coef=0.01, seed=opts.seed)
    else:
        model = DQN("CnnPolicy", env, buffer_size=100_000, learning_rate=1e-4, batch_size=32,
                    learning_starts=opts.learning_starts, target_update_interval=1_000, train_freq=4,
                    gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01,
                    optimize_memory_usage=False, seed=opts.seed)
    scores = None
    if opts.scores:
        Path(opts.scores).parent.mkdir(parents=True, exist_ok=True)
        scores = open(opts.scores, "x")  # new: checked above
        scores.write("agent_step,score,length_frames,seconds\n")
    clock = Clock(opts.warmup)
    start = time.perf_counter()
    model.learn(total_timesteps=opts.steps, callback=clock)
    env.close()
    if clock.mark is None or clock.end is None or clock.end[0] <= clock.mark[0]:
        raise SystemExit(f"error: no rollout started after {opts.warmup} agent steps of {opts.steps}")
    window_steps, window_seconds = clock.end[0] - clock.mark[0], clock.end[1] - clock.mark[1]
    result = json.dumps(dict(algo=opts.algo, steps=clock.end[0], window_steps=window_steps,
                             window_seconds=round(window_seconds, 3), sps=window_steps / window_seconds,
                             sps_whole=clock.end[0] / (clock.end[1] - start), seconds=round(clock.end[1] - start, 1),
                             budget=opts.steps, minutes=opts.minutes, env_id=opts.env_id, seed=opts.seed, system=f"Stable-Baselines3 {stable_baselines3.__version__}"))
    if scores is not None:
        scores.close()
        with open(Path(opts.scores).with_suffix(".json"), "w") as f:
            f.write(result + "\n")
    print(result)


if __name__ == "__main__":
    main()
