"""Speed of ppo_atari.py's training loop on this machine: agent steps/s, and where the time goes.

Each configuration runs ppo_atari.py itself as a subprocess, at its default hyperparameters (8 envs x 128
steps = 1024 agent steps per update, 4 epochs x 4 minibatches of 256), for --iterations updates, and reads
the TensorBoard events it writes: time/env, time/inference and time/update are cumulative seconds per
phase, logged once per update with the wall time. The first update is dropped (oneDNN picks its kernels,
the first games start). Of the updates after it, the fastest counts (the others were slowed by something
else on the machine: on a shared 2-core machine any other process halves us):
  steps/s     the agent steps of that update (rollout + update) / the wall seconds between its event and
              the previous update's
  env, inference, update: seconds in each phase per 1024 agent steps in that update (the rest, up to
              1024 / steps/s, is logging and the loop itself)
Every configuration is measured in the same invocation, --repeats times in round-robin order (the
fastest repeat counts; the steps/s of every repeat are listed too), so the ratios hold even when the
machine's load shifts the absolute numbers. "CleanRL-like" is the same-machine baseline: gymnasium's sync vector env
(CleanRL steps its envs in Python), fp32, contiguous (NCHW) memory, torch's loop Adam.

Two small tables time the network phases alone, in this process, with the variants taking turns round by
round (so a burst of load slows one round of each, and the best round counts): the rollout's batch-8
forward pass by memory format and torch threads, and one minibatch step of the update by memory format and
Adam kernel.

Usage (stop other heavy processes first; the numbers are only as quiet as the machine):
    python benchmark/ppo_speed.py                       # prints the tables
    python benchmark/ppo_speed.py --out benchmark/results/ppo_speed.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "ppo_atari.py")

# (name, flags on top of ppo_atari.py's defaults). Each speed setting is switched one at a time.
CONFIGS = [
    ("ppo_atari.py defaults", []),
    ("CleanRL-like: sync env, NCHW, loop Adam", ["--env-backend", "sync", "--no-channels-last", "--no-fused-adam",
                                                  "--no-flush-denormal"]),
    ("defaults, --no-channels-last", ["--no-channels-last"]),
    ("defaults, --no-fused-adam", ["--no-fused-adam"]),
    ("defaults, --torch-threads 1", ["--torch-threads", "1"]),
    ("defaults, --inference-threads 1", ["--inference-threads", "1"]),
    ("defaults, --env-backend sync", ["--env-backend", "sync"]),
]


def measure(flags: list[str], iterations: int, runs_dir: str) -> dict:
    """Run ppo_atari.py for `iterations` updates with `flags`; the numbers of its fastest update but the first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_name = f"speed{len(os.listdir(runs_dir))}"
    argv = [sys.executable, SCRIPT, "--total-timesteps", str(1024 * iterations), "--no-progress", "--runs-dir",
            runs_dir, "--run_name", run_name, *flags]  # (underscore spelling: `pkill -f -- --run-name` misses it)
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(flags) or 'defaults'} failed: {result.stderr.strip()[-500:]}")
    events = EventAccumulator(os.path.join(runs_dir, run_name), size_guidance={"scalars": 0}).Reload()
    marks = events.Scalars("charts/SPS")  # one event per update, with its step and wall time
    phases = {phase: [e.value for e in events.Scalars(f"time/{phase}")] for phase in ("env", "inference", "update")}
    rows = []
    for i in range(1, len(marks)):  # update i: from the event of update i-1 to its own
        steps = marks[i].step - marks[i - 1].step
        row = {"sps": steps / (marks[i].wall_time - marks[i - 1].wall_time)}
        row.update({phase: (cum[i] - cum[i - 1]) / steps * 1024 for phase, cum in phases.items()})
        rows.append(row)
    return max(rows, key=lambda row: row["sps"])


def best_of_rounds(variants: dict, calls: int, rounds: int) -> dict:
    """ms per call of each variant (a no-argument function): the best of `rounds` rounds of `calls` calls.

    The variants take turns round by round, so a burst of load from another process slows one round of
    each, not one variant; the best round is the machine's speed without it.
    """
    best = {name: float("inf") for name in variants}
    for name, fn in variants.items():  # warm-up: oneDNN picks its kernels on the first calls
        fn(), fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e3)
    return best


def phase_tables() -> list[str]:
    """The two network phases alone, in this process: the rollout's forward pass of 8 observations by
    memory format and threads, and one minibatch step of the update (256 observations: forward, PPO loss,
    backward, gradient clip, Adam) by memory format and Adam kernel, on 2 threads."""
    import torch
    from torch.distributions.categorical import Categorical

    sys.path.insert(0, ROOT)
    import ppo_atari  # sets OMP_WAIT_POLICY=PASSIVE before torch loads, as in training

    torch.manual_seed(0)
    frames = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    agents = {cl: ppo_atari.Agent(4, channels_last=cl).eval() for cl in (False, True)}

    def forward(channels_last: bool, threads: int):
        def call():
            torch.set_num_threads(threads)
            with torch.inference_mode():
                agents[channels_last](frames)
        return call

    fwd = best_of_rounds({(cl, t): forward(cl, t) for cl in (False, True) for t in (1, 2)}, calls=40, rounds=5)
    lines = ["forward pass of the rollout (batch 8, inference mode), ms per call, best of 5 rounds of 40:",
             f"{'':24s}{'1 thread':>10s}{'2 threads':>11s}"]
    for cl in (False, True):
        name = "channels-last (NHWC)" if cl else "contiguous (NCHW)"
        lines.append(f"{name:24s}{fwd[(cl, 1)]:10.2f}{fwd[(cl, 2)]:11.2f}")

    batch = torch.randint(0, 256, (256, 4, 84, 84), dtype=torch.uint8)
    actions, old_log_probs = torch.randint(0, 4, (256,)), torch.full((256,), -1.4)
    advantages, old_values, returns, mask = torch.randn(256), torch.randn(256), torch.randn(256), torch.ones(256)

    def update_step(channels_last: bool, fused: bool):
        agent = ppo_atari.Agent(4, channels_last=channels_last)
        optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5, fused=fused or None)

        def call():
            torch.set_num_threads(2)
            logits, values = agent(batch)
            dist = Categorical(logits=logits)
            loss, _ = ppo_atari.ppo_loss(dist.log_prob(actions), old_log_probs,
                                         ppo_atari.normalize_advantages(advantages, mask), values, old_values,
                                         returns, dist.entropy(), mask, 0.1, 0.5, 0.01, True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
            optimizer.step()
        return call

    upd = best_of_rounds({(cl, f): update_step(cl, f) for cl in (False, True) for f in (False, True)},
                         calls=3, rounds=5)
    lines += ["", "one minibatch step of the update (256 observations, 2 threads), ms, best of 5 rounds of 3:",
              f"{'':24s}{'loop Adam':>10s}{'fused Adam':>11s}"]
    for cl in (False, True):
        name = "channels-last (NHWC)" if cl else "contiguous (NCHW)"
        lines.append(f"{name:24s}{upd[(cl, False)]:10.1f}{upd[(cl, True)]:11.1f}")
    return lines


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        cpu = f"{fields['Model name'].strip()}, {fields['CPU(s)'].strip()} CPUs"
        flags = fields.get("Flags", "").split()
        cpu += "; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512f", "avx512_bf16", "amx_bf16"))
    except (OSError, KeyError):
        pass
    import torch

    return [f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", f"cpu: {cpu}",
            f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads "
            "by default", f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=4,
                        help="updates per run (the first dropped, the fastest counts)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each configuration, round-robin; the best counts")
    parser.add_argument("--out", help="also write the tables to this file")
    parser.add_argument("--only", type=int, nargs="*", help="indices into CONFIGS to run (default: all)")
    parser.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    parser.add_argument("--skip-loop", action="store_true", help="only the in-process tables of the network phases")
    args = parser.parse_args()

    lines = machine()
    lines += [f"ppo_atari.py at its defaults: 8 envs x 128 steps, 4 epochs x 4 minibatches; {args.iterations} updates "
              f"per run, the first dropped, the fastest of the others counts; {args.repeats} run(s) per configuration",
              ""]
    header = f"{'configuration':42s}{'steps/s':>9s}{'env':>7s}{'infer':>7s}{'update':>7s}   steps/s of every run"
    if args.iterations < 2:
        sys.exit("error: --iterations must be at least 2 (the first update is dropped)")
    configs = [] if args.skip_loop else [CONFIGS[i] for i in args.only] if args.only else CONFIGS
    print("\n".join(lines), flush=True)
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory() as runs_dir:
        for repeat in range(args.repeats):
            for name, flags in configs:
                runs[name].append(measure(flags, args.iterations, runs_dir))
                print(f"  run {repeat + 1}: {name}: {runs[name][-1]['sps']:.0f} steps/s", flush=True)
    if configs:
        lines += ["env, infer, update: seconds in each phase per 1024 agent steps, in the fastest update", header,
                  "-" * len(header)]
    for name, _ in configs:
        best = max(runs[name], key=lambda row: row["sps"])
        every = " ".join(f"{row['sps']:.0f}" for row in runs[name])
        lines.append(f"{name:42s}{best['sps']:9.0f}{best['env']:7.2f}{best['inference']:7.2f}{best['update']:7.2f}"
                     f"   {every}")
    print("\n".join(lines[-len(configs) - 3:]) if configs else "", flush=True)
    lines += ["", *phase_tables(), "", f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    print("\n".join(lines[-13:]), flush=True)
    if args.out:
        with open(args.out, "a" if args.append else "w") as f:
            f.write(("\n" if args.append else "") + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
