"""What periodic evaluation costs: the time of one evaluation beside the training time between two of them.

The default (`--eval-every 500000 --eval-episodes 10`, harness.RunArgs) must cost under 3% of a default
run. An evaluation's time grows with the agent: a better player's games last longer. So this plays the
evaluation with trained models (the committed PPO Breakout 2M and DQN Pong 1M models by default, whose
games are long) and with a random policy (the start of a run), and sets each beside the training time of
`--eval-every` agent steps at the script's default speed, measured here in the same run:

    python benchmark/studies/eval_cost.py              # both models, 10 games, speed from 8,192 agent steps
    python benchmark/studies/eval_cost.py --models ppo_atari.py=runs/x/ppo_atari.model --train-steps 16384

Each training speed comes from the script itself at its defaults (charts/SPS of a short run with
`--eval-episodes 0`), so pause other busy processes first for a figure worth quoting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmark")]

import harness  # noqa: E402
from timing import read_points, workload_flags  # noqa: E402

DEFAULT_MODELS = [
    "ppo_atari.py=" + os.path.join(ROOT, "benchmark", "results", "ppo_breakout_2M_run", "ppo_atari.model"),
    "dqn_atari.py=" + os.path.join(ROOT, "benchmark", "results", "dqn_pong_1M_run", "dqn_atari.model"),
]


def eval_fraction(eval_seconds: float, eval_every: int, train_steps_per_second: float) -> float:
    """The share of a run's time that evaluation takes: one evaluation per `eval_every` agent steps."""
    train_seconds = eval_every / train_steps_per_second
    return eval_seconds / (train_seconds + eval_seconds)


def training_speed(script: str, steps: int, env_id: str) -> float:
    """Agent steps/s of `script` at its defaults (no evaluation), from its last charts/SPS point."""
    with tempfile.TemporaryDirectory() as runs:
        subprocess.run([sys.executable, os.path.join(ROOT, script), "--env-id", env_id, "--total-timesteps",
                        str(steps), "--eval-episodes", "0", "--no-progress", "--runs-dir", runs, "--run-name", "s",
                        *workload_flags(script)], check=True, capture_output=True)
        return read_points(Path(runs) / "s")[-1].reported_sps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="SCRIPT=MODEL_FILE pairs")
    parser.add_argument("--episodes", type=int, default=10, help="games per evaluation (default 10)")
    parser.add_argument("--eval-every", type=int, default=500_000, help="agent steps between evaluations")
    parser.add_argument("--train-steps", type=int, default=8192, help="agent steps of the speed measurement")
    opts = parser.parse_args()

    for pair in opts.models:
        script, _, path = pair.partition("=")
        module = __import__(script[: -len(".py")])
        saved = harness.load_file(path, "model file", script.split("_")[0])
        args = module.Args(env_id=saved["env_id"])
        net = (module.Agent if hasattr(module, "Agent") else module.QNetwork)(saved["num_actions"], args.channels_last)
        net.load_state_dict(saved["model"])
        net.eval()
        proc = harness.Process(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"),
                               torch_threads=torch.get_num_threads(), inference_threads=torch.get_num_threads(),
                               env_threads=0, seed=1,
                               autocast=torch.autocast("cpu", torch.bfloat16,
                                                       enabled=harness.native_bf16("cpu") if args.bf16 is None else args.bf16))
        trained = (module.evaluation_act(net, args.eval_epsilon, proc) if hasattr(module, "evaluation_act")
                   else harness.sampling_act(net, proc))
        acts = {"trained": trained, "random": harness.random_act(saved["num_actions"])}
        sps = training_speed(script, opts.train_steps, saved["env_id"])
        print(f"{script} on {saved['env_id']}: training at its defaults {sps:.0f} agent steps/s here, so "
              f"{opts.eval_every:,} agent steps take {opts.eval_every / sps:.0f} s")
        for name, act in acts.items():
            t0 = time.perf_counter()
            scores = harness.evaluate(args, act, opts.episodes, seed=1)
            seconds = time.perf_counter() - t0
            print(f"  {name:>7} policy: {opts.episodes} games (mean score {np.mean(scores):.1f}) in {seconds:.1f} s "
                  f"= {100 * eval_fraction(seconds, opts.eval_every, sps):.2f}% of the run's time")


if __name__ == "__main__":
    main()
