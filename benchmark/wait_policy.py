"""Agent steps/s of each script under OpenMP's two wait policies, alone and two runs at once.

After a parallel region, libgomp's threads spin for a while before they sleep (its default); with
OMP_WAIT_POLICY=PASSIVE they sleep at once, and the next op must wake them. An update is hundreds of small
ops, so the policy shows in every phase. The scripts keep the default since this measurement; before it
they set PASSIVE. The pair rows run two copies of the same script at once: each with every core (what a
user gets who starts two runs by hand), and each with its share (`--torch-threads` and `--env-threads`
cores / 2, as benchmark/run.py --parallel gives each run its own cores).

    python benchmark/wait_policy.py                    # ppo, a2c, dqn; about 10 minutes on 2 cores
    python benchmark/wait_policy.py --scripts dqn --no-pairs

Every run is `SCRIPT --total-timesteps N --eval-episodes 0 --no-progress` at the script's defaults (DQN
with `--learning-starts 1000 --buffer-size 100000`); steps/s come from charts/SPS's event times after the
first fifth of the run. Pause other busy processes first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from scaling import ROOT, steps_per_second

STEPS = {"ppo": 16_384, "a2c": 40_000, "dqn": 6_000}
EXTRA = {"dqn": ["--learning-starts", "1000", "--buffer-size", "100000"]}
POLICIES = {"PASSIVE": "OMP_WAIT_POLICY=PASSIVE", "default": "libgomp's default (spin, then sleep)"}


def policy_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return dict(env, OMP_WAIT_POLICY="PASSIVE") if policy == "PASSIVE" else env


def start(script: str, steps: int, runs: str, name: str, env: dict, threads: int | None) -> subprocess.Popen:
    cmd = [sys.executable, os.path.join(ROOT, f"{script}_atari.py"), "--total-timesteps", str(steps),
           "--eval-episodes", "0", "--no-progress", "--runs-dir", runs, "--run-name", name, *EXTRA.get(script, [])]
    if threads is not None:
        cmd += ["--torch-threads", str(threads), "--env-threads", str(threads)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def measure(script: str, policy: str, copies: int, threads: int | None, steps: int) -> list[float]:
    """Agent steps/s of each of `copies` runs of `script` started together."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as runs:
        processes = [start(script, steps, runs, f"r{i}", policy_env(policy), threads) for i in range(copies)]
        for process in processes:
            _, err = process.communicate()
            if process.returncode != 0:
                sys.exit(f"{script} failed: {err.strip().splitlines()[-1] if err.strip() else process.returncode}")
        figures = []
        for i in range(copies):
            events = EventAccumulator(os.path.join(runs, f"r{i}"), size_guidance={"scalars": 0}).Reload()
            figures.append(steps_per_second([(e.step, e.wall_time) for e in events.Scalars("charts/SPS")], steps // 5))
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scripts", default="ppo,a2c,dqn", help="comma-separated: ppo, a2c, dqn")
    parser.add_argument("--no-pairs", action="store_true", help="only the runs alone")
    opts = parser.parse_args()
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
            alone = measure(script, policy, 1, None, STEPS[script])[0]
            cells = [f"{alone:,.0f}"]
            if not opts.no_pairs:
                for threads in (None, share):
                    steps = STEPS[script] // 2 if threads is None else STEPS[script]  # crowded runs crawl
                    pair = measure(script, policy, 2, threads, steps)
                    cells.append(" + ".join(f"{x:,.0f}" for x in pair))
            else:
                cells += ["-", "-"]
            print(f"| {script} | {POLICIES[policy]} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
