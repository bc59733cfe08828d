"""Does torch.compile make a script faster on this machine? Each script at its defaults, without and with
`--compile` (nn.Module.compile, TorchInductor), interleaved, phase by phase.

`--compile` is off by default: it changes the numerics (fused kernels round differently), and a run pays
for its compile at the start (tens of seconds on 2 cores, a few once TorchInductor's cache is warm). This
benchmark measures what it buys once compiled, which is what the flag's help text quotes.

    python benchmark/studies/compile_speed.py               # ppo, a2c, dqn; 2 rounds; about 15 minutes on 2 cores
    python benchmark/studies/compile_speed.py --scripts ppo --rounds 3

Every run is `SCRIPT --total-timesteps N --eval-episodes 0 --no-progress` (DQN with `--learning-starts 1000
--buffer-size 100000`); agent steps/s and the phases come from the events after the first third of the run,
where the compiles are done. Pause other busy processes first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmark"))
from timing import time_script  # noqa: E402

STEPS = {"ppo": 49_152, "a2c": 80_000, "dqn": 12_000}


def measure(script: str, compiled: bool, steps: int) -> dict:
    """The window figures of one run: sps and seconds per 1,024 agent steps of each phase."""
    return time_script(script, ["--compile"] if compiled else [], steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scripts", default="ppo,a2c,dqn", help="comma-separated: ppo, a2c, dqn")
    parser.add_argument("--rounds", type=int, default=2, help="eager and compiled runs of each script (default 2)")
    opts = parser.parse_args()
    scripts = [s for s in opts.scripts.split(",") if s]
    if not scripts or any(s not in STEPS for s in scripts):
        sys.exit(f"--scripts: choose from {', '.join(STEPS)}")
    if opts.rounds < 1:
        sys.exit("--rounds must be at least 1")
    print("agent steps/s and seconds per 1,024 agent steps after the first third of each run; medians over "
          f"{opts.rounds} interleaved round(s)\n")
    print("| script | run | agent steps/s | env | inference | update | all rounds (steps/s) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for script in scripts:
        runs = {False: [], True: []}
        for _ in range(opts.rounds):
            for compiled in (False, True):
                runs[compiled].append(measure(script, compiled, STEPS[script]))
        for compiled in (False, True):
            median = lambda key: statistics.median(r["phases"].get(key, float("nan")) for r in runs[compiled])
            sps = statistics.median(r["sps"] for r in runs[compiled])
            rounds = ", ".join(f"{r['sps']:,.0f}" for r in runs[compiled])
            print(f"| {script} | {'--compile' if compiled else 'eager'} | {sps:,.0f} | {median('env'):.3f} | "
                  f"{median('inference'):.3f} | {median('update'):.3f} | {rounds} |", flush=True)


if __name__ == "__main__":
    main()
