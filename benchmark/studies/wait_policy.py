"""Agent steps/s of each script under OpenMP's two wait policies, alone and two runs at once.

After a parallel region, libgomp's threads spin for a while before they sleep (its default); with
OMP_WAIT_POLICY=PASSIVE they sleep at once, and the next op must wake them. An update is hundreds of small
ops, so the policy shows in every phase. The scripts keep the default since this measurement; before it
they set PASSIVE. The pair rows run two copies of the same script at once: each with every core (what a
user gets who starts two runs by hand), and each with its share (`--torch-threads` and `--env-threads`
cores / 2, each run pinned to its own half of the cores, as benchmark/run.py --parallel runs them).

    python benchmark/studies/wait_policy.py            # ppo, a2c, dqn; at most 300 s a measurement: up to 90 minutes on 2 cores
    python benchmark/studies/wait_policy.py --scripts dqn --no-pairs
    python benchmark/studies/wait_policy.py --handoff  # the rollout's handoff under each spin count; 2 minutes

`--handoff` times PPO's rollout alone, without the script around it: a forward pass of PPO's network on 8
observations with a sampled action, then a step of 8 native envs, in turn, for 5 s per setting, under
libgomp spin counts from 0 (PASSIVE) to unbounded (ACTIVE). Each hands the cores from the torch threads to
the emulator threads and back; what it costs shows beside the bare costs of `throughput.py`.

Every run is `SCRIPT --total-timesteps N --eval-episodes 0 --no-progress` at the script's defaults (DQN
with `--learning-starts 1000 --buffer-size 100000`); steps/s come from charts/SPS's event times after the
first fifth of the run. A measurement still running after 300 s is stopped and reported unfinished (a pair
with every core each can crawl for hours). Pause other busy processes first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmark"))
from run import core_slots  # noqa: E402
from timing import loop_figures, read_points, workload_flags  # noqa: E402

STEPS = {"ppo": 16_384, "a2c": 40_000, "dqn": 6_000}
LIMIT = 300.0  # seconds a measurement may take before it is reported as unfinished
POLICIES = {"PASSIVE": "OMP_WAIT_POLICY=PASSIVE", "default": "libgomp's default (spin, then sleep)"}


def policy_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return dict(env, OMP_WAIT_POLICY="PASSIVE") if policy == "PASSIVE" else env


def start(script: str, steps: int, runs: str, name: str, env: dict, threads: int | None,
          cores: set[int] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, os.path.join(ROOT, f"{script}_atari.py"), "--total-timesteps", str(steps),
           "--eval-episodes", "0", "--no-progress", "--runs-dir", runs, "--run-name", name,
           *workload_flags(script)]
    if threads is not None:
        cmd += ["--torch-threads", str(threads), "--env-threads", str(threads)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)


def measure(script: str, policy: str, copies: int, threads: int | None, steps: int,
            limit: float = LIMIT) -> list[float] | None:
    """Agent steps/s of each of `copies` runs of `script` started together; None when they were still
    running after `limit` seconds (then they are stopped: a pair with every core each can crawl for hours)."""
    with tempfile.TemporaryDirectory() as runs:
        slots = core_slots(copies) if threads is not None else None  # a share each: pinned to it
        processes = [start(script, steps, runs, f"r{i}", policy_env(policy), threads, slots[i] if slots else None)
                     for i in range(copies)]
        deadline = time.monotonic() + limit
        for process in processes:
            try:
                _, err = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for p in processes:
                    p.kill()
                    p.communicate()
                return None
            if process.returncode != 0:
                sys.exit(f"{script} failed: {err.strip().splitlines()[-1] if err.strip() else process.returncode}")
        figures = [loop_figures(read_points(Path(runs) / f"r{i}"), steps // 5) for i in range(copies)]
        if None in figures:
            sys.exit(f"{script}: too few logged points after the first fifth of a run; give it more steps")
        return [f["sps"] for f in figures]


SPIN_COUNTS = ["0", "1000", "10000", "30000", "100000", "default", "ACTIVE"]
SPIN_LABELS = {"0": "0 (PASSIVE)", "default": "300,000 (libgomp's default)", "ACTIVE": "unbounded (ACTIVE)"}


def handoff_child() -> None:
    """Print the mean ms of a forward pass and of an env step, alternating, after 100 warm-up steps."""
    import torch
    from torch.distributions.categorical import Categorical

    sys.path.insert(0, str(ROOT))
    import harness
    import ppo_atari
    import wrappers

    envs = wrappers.make_vector_env("BreakoutNoFrameskip-v4", 8, backend="native")
    obs, _ = envs.reset(seed=0)
    agent = ppo_atari.Agent(int(envs.single_action_space.n), channels_last=True).eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=harness.native_bf16())
    forward = step = 0.0
    n = 0
    with torch.inference_mode(), autocast:
        start = time.perf_counter()
        while time.perf_counter() - start < 5.0 or n < 200:
            t0 = time.perf_counter()
            logits, _ = agent(torch.from_numpy(obs))
            actions = Categorical(logits=logits, validate_args=False).sample().numpy()
            t1 = time.perf_counter()
            obs = envs.step(actions)[0]
            t2 = time.perf_counter()
            if n >= 100:
                forward, step = forward + t1 - t0, step + t2 - t1
            n += 1
    print(f"{forward / (n - 100) * 1e3:.3f} {step / (n - 100) * 1e3:.3f}")


def handoff() -> None:
    print("PPO's rollout without the script: a forward pass on 8 observations, then a step of 8 native envs,")
    print("in turn for 5 s; ms each, and seconds per 1,024 agent steps (128 of each)\n")
    print("| libgomp spin count | forward pass, ms | env step, ms | s per 1,024 agent steps |")
    print("|---|---:|---:|---:|")
    for spin in SPIN_COUNTS:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        if spin == "ACTIVE":
            env["OMP_WAIT_POLICY"] = "ACTIVE"
        elif spin != "default":
            env["GOMP_SPINCOUNT"] = spin
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--handoff-child"], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"handoff under spin count {spin} failed: {done.stderr.strip().splitlines()[-1:]}")
        forward, step = (float(x) for x in done.stdout.split())
        label = SPIN_LABELS.get(spin, f"{int(spin):,}")
        print(f"| {label} | {forward:.2f} | {step:.2f} | {(forward + step) * 0.128:.3f} |", flush=True)


def main() -> None:
    if "--handoff-child" in sys.argv:
        handoff_child()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scripts", default="ppo,a2c,dqn", help="comma-separated: ppo, a2c, dqn")
    parser.add_argument("--no-pairs", action="store_true", help="only the runs alone")
    parser.add_argument("--handoff", action="store_true", help="only the rollout's handoff under each spin count")
    opts = parser.parse_args()
    if opts.handoff:
        handoff()
        return
    scripts = [s for s in opts.scripts.split(",") if s]
    if not scripts or any(s not in STEPS for s in scripts):
        sys.exit(f"--scripts: choose from {', '.join(STEPS)}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, cores // 2)
    print(f"{cores} cores; agent steps/s after the first fifth of each run\n")
    print("| script | policy | alone | two at once, all cores each | two at once, a share each |")
    print("|---|---|---:|---:|---:|")
    for script in scripts:
        for policy in POLICIES:
            runs = [measure(script, policy, 1, None, STEPS[script])]
            if not opts.no_pairs:
                for threads in (None, share):
                    steps = STEPS[script] // 2 if threads is None else STEPS[script]  # crowded runs crawl
                    runs.append(measure(script, policy, 2, threads, steps))
            cells = [" + ".join(f"{x:,.0f}" for x in r) if r else f"unfinished after {LIMIT:.0f} s" for r in runs]
            if opts.no_pairs:
                cells += ["-", "-"]
            print(f"| {script} | {POLICIES[policy]} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
