"""How fast does a script run under other settings? Each candidate (a script and its flags), interleaved, phase
by phase, for choosing the settings of a preset by its agent steps/s and where the time goes.

Agent steps/s alone do not choose a preset: fewer epochs or smaller minibatches buy speed with learning per
agent step, which only a training run shows. This study gives the first half of that trade, measured.

    python benchmark/studies/settings_speed.py "pqn" "pqn --num-envs 128 --num-steps 32 --num-minibatches 32 --update-epochs 2"
    python benchmark/studies/settings_speed.py --steps 65536 --rounds 2 "ppo" "ppo --update-epochs 2"

Every run is `SCRIPT_atari.py --total-timesteps STEPS --eval-episodes 0 --no-progress --no-save-model FLAGS` (DQN also with
`--learning-starts 1000 --buffer-size 100000`); agent steps/s and the phases come from the events after the
first third of the run (benchmark/timing.py). Pause other busy processes first (`--pause PID ...`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmark"))
from timing import time_script  # noqa: E402

SCRIPTS = ("ppo", "a2c", "dqn", "pqn")


def measure(candidate: str, steps: int) -> dict:
    """The window figures of one run of `candidate` ("script --flag value ...")."""
    script, *flags = shlex.split(candidate)
    return time_script(script, flags, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help='each "SCRIPT [FLAGS]", SCRIPT one of ' + ", ".join(SCRIPTS))
    parser.add_argument("--steps", type=int, default=49_152, help="agent steps of each run (default 49,152)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every candidate (default 1)")
    parser.add_argument("--pause", type=int, nargs="+", default=[], metavar="PID",
                        help="processes to stop (SIGSTOP) while measuring, resumed (SIGCONT) at the end")
    opts = parser.parse_args()
    for candidate in opts.candidates:
        if not candidate.split() or candidate.split()[0] not in SCRIPTS:
            sys.exit(f"{candidate!r}: a candidate starts with one of {', '.join(SCRIPTS)}")
    if opts.rounds < 1 or opts.steps < 3_000:
        sys.exit("--rounds must be at least 1 and --steps at least 3,000")
    runs = {c: [] for c in opts.candidates}
    for pid in opts.pause:
        os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(opts.rounds):
            for candidate in opts.candidates:
                runs[candidate].append(measure(candidate, opts.steps))
                print(f"  {candidate}: {runs[candidate][-1]['sps']:,.0f} agent steps/s", file=sys.stderr, flush=True)
    finally:
        for pid in opts.pause:
            os.kill(pid, signal.SIGCONT)
    print(f"agent steps/s and seconds per 1,024 agent steps after the first third of {opts.steps:,} agent steps; "
          f"medians over {opts.rounds} interleaved round(s); {len(os.sched_getaffinity(0))} cores\n")
    print("| candidate | agent steps/s | env | inference | update | other | all rounds (steps/s) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for candidate, figures in runs.items():
        median = lambda key: statistics.median(r["phases"].get(key, float("nan")) for r in figures)
        rounds = ", ".join(f"{r['sps']:,.0f}" for r in figures)
        print(f"| `{candidate}` | {statistics.median(r['sps'] for r in figures):,.0f} | {median('env'):.3f} | "
              f"{median('inference'):.3f} | {median('update'):.3f} | {median('other'):.3f} | {rounds} |", flush=True)


if __name__ == "__main__":
    main()
