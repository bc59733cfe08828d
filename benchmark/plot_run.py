"""The learning curve of one run: its TensorBoard scores as a CSV, a plot, and the final score.

Reads every events file of a run directory (a resumed run has several; TensorBoard's purge on resume
drops what an interrupted run wrote after its checkpoint), takes one scalar tag (default the raw score of
each whole game, `charts/episodic_return`, logged at the global agent step where the game ended) and writes
  <out>.csv   step,<value name>  one row per game, in step order
  <out>.png   every game as a dot, and the rolling mean of the last --window games as a line
then prints the final score: the mean of the last --window games (the number CleanRL's and our READMEs
report), and how many games there were. Works for any script that logs the contract's tags.

Usage:
    python benchmark/plot_run.py runs/ppo_breakout_2M benchmark/results/ppo_breakout_2M
    python benchmark/plot_run.py runs/<run> out/<name> --tag charts/episodic_length --window 50
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np


def read_scalars(run_dir: str, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `tag` in the events of `run_dir`, sorted by step; exits with one line if absent."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not os.path.isdir(run_dir):
        sys.exit(f"error: run directory '{run_dir}' does not exist")
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0}).Reload()  # 0: keep every event
    if tag not in events.Tags()["scalars"]:
        known = ", ".join(sorted(events.Tags()["scalars"])) or "none"
        sys.exit(f"error: no scalar '{tag}' in '{run_dir}' (its scalars: {known})")
    scalars = sorted(events.Scalars(tag), key=lambda e: e.step)  # stable: games ending at one step keep order
    return np.array([e.step for e in scalars], dtype=np.int64), np.array([e.value for e in scalars])


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each index (of all values so far, before `window` are in)."""
    sums = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (sums[index] - sums[start]) / (index - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run directory with TensorBoard events (runs/<run_name>)")
    parser.add_argument("out", help="output path without extension: writes <out>.csv and <out>.png")
    parser.add_argument("--tag", default="charts/episodic_return", help="the scalar to plot (one value per game)")
    parser.add_argument("--window", type=int, default=100, help="games in the rolling mean and the final score")
    parser.add_argument("--title", help="plot title (default: the run directory's name)")
    args = parser.parse_args()
    if args.window < 1:
        sys.exit(f"error: --window must be at least 1, got {args.window}")

    steps, values = read_scalars(args.run_dir, args.tag)
    if len(values) == 0:
        sys.exit(f"error: '{args.tag}' in '{args.run_dir}' has no values yet")
    name = args.tag.split("/")[-1]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", name])
        writer.writerows(zip(steps.tolist(), values.tolist()))

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    mean = rolling_mean(values, args.window)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.scatter(steps, values, s=6, alpha=0.45, color="tab:blue", linewidths=0, label="one game")
    ax.plot(steps, mean, color="tab:red", linewidth=1.5, label=f"mean of the last {args.window} games")
    ax.set_xlabel("agent steps (all envs; 1 agent step = 4 frames)")
    ax.set_ylabel(name.replace("_", " "))
    ax.set_title(args.title or os.path.basename(os.path.normpath(args.run_dir)))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out + ".png")

    last = values[-args.window:]
    print(f"final {name}: {last.mean():.2f} +- {last.std():.2f} (mean +- std of the last {len(last)} games), "
          f"{len(values)} games, last at step {steps[-1]}")
    print(f"wrote {args.out}.csv and {args.out}.png")


if __name__ == "__main__":
    main()
