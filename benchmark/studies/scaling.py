"""Agent steps/s of a data-parallel script against the number of torchrun workers on this machine.

Each worker plays its own --num-envs games and the job counts the steps of all of them, so W workers do
W times the env work and the same number of gradient steps, each on W times the samples (averaged). On
one machine the workers share its cores: the figure shows where adding workers stops paying.

    python benchmark/studies/scaling.py                      # a2c_atari.py, 1 and 2 workers, 40,000 agent steps
    python benchmark/studies/scaling.py --script ppo_atari.py --workers 1 2 4 --steps 32768

Every run is `torchrun --standalone --nproc_per_node W SCRIPT --total-timesteps N --eval-episodes 0
--no-progress` with the script's defaults otherwise; steps/s come from charts/SPS's event times after the
first fifth of the run (imports, the first updates). Pause other busy processes first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmark"))
from timing import loop_figures, read_points  # noqa: E402


def run(script: str, workers: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(workers),
               os.path.join(ROOT, script), "--total-timesteps", str(steps), "--eval-episodes", "0", "--no-progress",
               "--runs-dir", runs, "--run-name", "s"]
        subprocess.run(cmd, check=True, capture_output=True)
        figures = loop_figures(read_points(Path(runs) / "s"), steps // 5)
        if figures is None:
            sys.exit(f"{script}, {workers} worker(s): too few logged points after the first fifth: more --steps")
        return figures["sps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", default="a2c_atari.py", help="a data-parallel script (a2c_atari.py, ppo_atari.py)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="torchrun processes per run")
    parser.add_argument("--steps", type=int, default=40_000, help="agent steps of each run (of the whole job)")
    opts = parser.parse_args()
    if not os.path.isfile(os.path.join(ROOT, opts.script)) or any(w < 1 for w in opts.workers):
        print("error: --script must be a script of this repository and --workers at least 1", file=sys.stderr)
        sys.exit(2)
    print(f"{opts.script}, {len(os.sched_getaffinity(0))} cores, {opts.steps:,} agent steps per run")
    base = None
    for workers in opts.workers:
        sps = run(opts.script, workers, opts.steps)
        base = base or sps
        print(f"  {workers} worker(s): {sps:,.0f} agent steps/s ({sps / base:.2f}x one worker)", flush=True)


if __name__ == "__main__":
    main()
