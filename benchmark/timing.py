"""How a timed run of one of our scripts is set up and read: the flags it adds to the script's defaults, the
points the script logs to TensorBoard, and its figures over the window after a warm-up.

A script logs charts/SPS (agent steps/s since its start) and time/<phase> (the cumulative seconds of each
phase of its loop: env, inference, replay, update, eval) at the same steps. Speed is measured between two
of those points by their wall-clock times, after a warm-up that leaves out the imports and first updates.
benchmark/throughput.py and the studies of benchmark/studies/ time runs this way, so their figures are
comparable.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PER = 1024  # phase times are shown in seconds per this many agent steps (one PPO rollout)
# The DQN workload of every speed comparison here, ours and the peers' (the reference figures of CleanRL's
# dqn_atari.py were taken with it): learning starts after 1,000 agent steps, so that a short run is mostly
# learning, and the replay memory holds 100,000 transitions.
LEARNING_STARTS = 1_000
DQN_FLAGS = ["--learning-starts", str(LEARNING_STARTS), "--buffer-size", "100000"]


def workload_flags(script: str) -> list[str]:
    """The flags that a timed run of `script` (ppo, a2c, dqn, or a file name of one) adds to its defaults."""
    return list(DQN_FLAGS) if Path(script).name.startswith("dqn") else []


@dataclass(frozen=True)
class Point:
    """One logged point of a run: agent step, wall-clock time of the event, the steps/s the script
    reported there (since its start), and the cumulative seconds of each phase so far."""

    step: int
    wall_time: float
    reported_sps: float | None = None
    phases: dict = field(default_factory=dict)


def read_points(run_root: Path) -> list[Point]:
    """The logged points of the run whose TensorBoard events lie somewhere under `run_root`: one per
    charts/SPS event, with the time/<phase> values logged at the same step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_root.rglob("events.out.tfevents*"), key=lambda p: p.stat().st_mtime)
    if not files:
        return []
    events = EventAccumulator(str(files[-1].parent), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    if "charts/SPS" not in tags:
        return []
    phases = {t[len("time/"):]: {e.step: e.value for e in events.Scalars(t)} for t in tags if t.startswith("time/")}
    return [Point(e.step, e.wall_time, e.value, {p: v[e.step] for p, v in phases.items() if e.step in v})
            for e in events.Scalars("charts/SPS")]


def window(points: list[Point], warmup: int) -> tuple[Point, Point] | None:
    """The measured window: from the first point at or after `warmup` agent steps to the last point
    (None when fewer than two points are left)."""
    after = sorted((p for p in points if p.step >= warmup), key=lambda p: p.step)
    if len(after) < 2 or after[-1].step == after[0].step:
        return None
    return after[0], after[-1]


def steps_per_second(first: Point, last: Point) -> float:
    """Agent steps/s between two points, by their wall-clock times."""
    return (last.step - first.step) / (last.wall_time - first.wall_time)


def phase_seconds(first: Point, last: Point, per: int = PER) -> dict[str, float]:
    """Seconds of each phase per `per` agent steps between two points of cumulative phase times."""
    steps = last.step - first.step
    return {p: (last.phases[p] - first.phases[p]) / steps * per for p in last.phases if p in first.phases}


def loop_figures(points: list[Point], warmup: int, per: int = PER) -> dict | None:
    """A run's figures over its window: sps (agent steps/s), sps_whole (the last steps/s the script
    reported, over its whole run), phases (seconds per `per` agent steps, including `other`: the loop's time
    outside every timed phase), window (first and last agent step). None without a window."""
    found = window(points, warmup)
    if found is None:
        return None
    first, last = found
    sps = steps_per_second(first, last)
    phases = {p: s for p, s in phase_seconds(first, last, per).items() if p != "eval" or s > 0}
    if phases:
        phases["other"] = per / sps - sum(phases.values())
    return dict(sps=sps, sps_whole=last.reported_sps, phases=phases, window=(first.step, last.step))


def time_script(script: str, flags: list[str], steps: int) -> dict:
    """The window figures (`loop_figures`, after the first third) of one run of `{script}_atari.py` for `steps`
    agent steps with `flags` on top of the timed workload (no evaluation, progress bar or model file), in a
    temporary runs directory. A failed run ends this process with its last line of stderr."""
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, str(REPO / f"{script}_atari.py"), "--total-timesteps", str(steps), "--eval-episodes",
               "0", "--no-progress", "--no-save-model", "--runs-dir", runs, "--run-name", "r",
               *workload_flags(script), *flags]
        done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            sys.exit(f"{script} {' '.join(flags)}: failed: {lines[-1] if lines else done.returncode}")
        figures = loop_figures(read_points(Path(runs)), steps // 3)
        if figures is None:
            sys.exit(f"{script} {' '.join(flags)}: too few logged points after the first third; give it more steps")
        return figures
