"""How much of a trained run's Adam state is subnormal, and what that costs an Adam step on this CPU.

Floats below 1.2e-38 (subnormals) take a slow path in x86 arithmetic, often tens of times slower. Adam's
moment estimates decay geometrically where a parameter's gradient is zero (dead ReLU units, unused
actions), so after many updates a large share of them is subnormal. Both scripts turn on
torch.set_flush_denormal by default (`--flush-denormal`); this measures why, on a real checkpoint:
  - the share of subnormal values in the checkpoint's Adam moments (exp_avg, exp_avg_sq);
  - one Adam step (the same parameters, the checkpoint's state, random gradients), fused and for-loop,
    with flush-to-zero off and on.

Usage:
    python benchmark/denormal_speed.py runs/dqn_pong_1M/checkpoint.pt [--threads 2] [--rounds 10]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32, 1.18e-38


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint.pt written by ppo_atari.py or dqn_atari.py")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--child", choices=["off", "on"], help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if not os.path.isfile(opts.checkpoint):
        sys.exit(f"error: checkpoint '{opts.checkpoint}' does not exist")
    checkpoint = torch.load(opts.checkpoint, map_location="cpu", weights_only=True)
    torch.set_num_threads(opts.threads)
    if opts.child is not None:
        print(json.dumps(time_adam_steps(checkpoint, opts.rounds, flush=opts.child == "on")))
        return

    moments = [s[k] for s in checkpoint["optimizer"]["state"].values() for k in ("exp_avg", "exp_avg_sq")]
    total = sum(m.numel() for m in moments)
    subnormal = sum(int(((m != 0) & (m.abs() < TINY)).sum()) for m in moments)
    print(f"{opts.checkpoint}: step {checkpoint['global_step']}, {checkpoint['algo']}, "
          f"{total:,} Adam moment values, {100 * subnormal / total:.1f}% subnormal")

    # The flag is per thread, and torch's worker threads take it from the main thread when they are
    # created: each setting gets its own process that sets it first, as the scripts do, and the two
    # settings take turns.
    times = {(fused, flush): [] for fused in (False, True) for flush in (False, True)}
    for _ in range(2):
        for flush in ("off", "on"):
            out = subprocess.run([sys.executable, __file__, opts.checkpoint, "--threads", str(opts.threads),
                                  "--rounds", str(opts.rounds), "--child", flush],
                                 capture_output=True, text=True, check=True).stdout
            for fused, ms in json.loads(out.splitlines()[-1]).items():
                times[(fused == "fused", flush == "on")] += ms
    print(f"one Adam step, {opts.threads} torch threads, median of {2 * opts.rounds} steps in 2 processes each:")
    for (fused, flush), ms in times.items():
        print(f"  {'fused   ' if fused else 'for-loop'} Adam, flush-denormal {'on ' if flush else 'off'}: "
              f"{np.median(ms):6.2f} ms")


def time_adam_steps(checkpoint: dict, rounds: int, flush: bool) -> dict[str, list[float]]:
    """ms of single Adam steps from the checkpoint's state, for-loop and fused taking turns."""
    torch.set_flush_denormal(flush)  # before the first parallel region creates the worker threads
    optimizers = {}
    for fused in (False, True):
        # The optimizer's parameters are the model's, in state_dict order (the networks have no buffers).
        params = [t.clone().requires_grad_(True) for t in checkpoint["model"].values()]
        torch.manual_seed(0)
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        optimizers["fused" if fused else "loop"] = (torch.optim.Adam(params, lr=1e-4, fused=fused or None), fused)
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(rounds + 1):
        for name, (optimizer, fused) in optimizers.items():
            # Each step starts again from the checkpoint's state, so the subnormals are there each time.
            optimizer.load_state_dict(copy.deepcopy(checkpoint["optimizer"]))
            optimizer.param_groups[0]["fused"] = fused or None
            start = time.perf_counter()
            optimizer.step()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: ms[1:] for name, ms in times.items()}  # the first round warms up


if __name__ == "__main__":
    main()
