"""Benchmark report: small summaries of finished runs, then learning curves, a results table and an aggregate.

Two steps, so that the results page can be rebuilt anywhere from files committed beside it:

1. `--extract RUN_DIR...` reads each run's TensorBoard events directly (no server; a resumed run's several
   events files merged by TensorBoard's own purge rule: a resumed process drops every earlier event at a
   step >= its first) and writes into benchmark/summaries/ two small files per run, named
   {game}__{algo}__{seed}__{budget} (budget in agent steps, e.g. 10M), and __{preset} after it for a run at a
   --preset other than the script's published defaults (its rows, curves and aggregate stand apart too):
     .csv   tag,step,wall_time,value: the score of every training game (charts/episodic_return), of every
            evaluation game (eval/episodic_return), and charts/SPS thinned to at most 200 points
     .json  algorithm, game, seed, budget, agent steps, wall-clock (the processes the curve keeps, each from
            its first to its last logged point, so pauses between resumes do not count), the commands that
            made the run, the resolved settings, and where the run came from
   A directory without events files is taken as a runs root, and each run directory in it is extracted.
   Only finished runs (a model file, and exit status 0 where benchmark/run.py recorded one) unless
   --allow-unfinished, whose runs the report marks "in progress".
2. With no run directories it reads benchmark/summaries/ alone and writes benchmark/figures/ (learning
   curves against agent steps and against wall-clock hours: per game a panel, per algorithm and budget the
   mean over seeds of each seed's mean of its last 100 games, with the min-max band over seeds, and the
   game's score thresholds as dotted lines) and benchmark/README.md: the table beside the published numbers
   of benchmark/reference/, the aggregate over games, the time to a score, the figures, and for every number
   the summary it comes from and the commands that made the run. The lines between the two "hand-written"
   markers of benchmark/README.md are kept as they are.
   Time to a score, also printed: per run and per threshold of its game (benchmark/reference/
   score_thresholds.csv), the agent steps and the minutes of training until the mean of the last 100
   training games first reached it, from the 100th game on, "-" if never. Minutes are the run's own
   wall-clock: each game's logged time, less the pauses between the processes (segments) of a resumed run.
3. `--extract-peer PEER_RUN` summarizes a peer's learning run made here, beside ours. Either the file of
   every finished game that `benchmark/sb3_speed.py --scores` writes (agent_step,score,length_frames,seconds),
   with the record it writes beside it when learning ends (SCORES.json: algorithm, game, seed, agent steps,
   budget, minutes, seconds, the system's name and version); or the run directory of
   `benchmark/cleanrl_run.py`, CleanRL's own script run unchanged: its events (charts/episodic_return, whole
   games with raw scores, timed from the events' start) and its record (cleanrl_run.json, the same fields).
   Both can end learning after `--minutes M` of wall-clock: the budget is then the one the schedules span
   (e.g. 10M), and the agent steps those played. Its summary is named {game}__{algo}__{seed}__{budget}__{peer}[__{M}min]
   (peer: sb3, cleanrl), and its row, curve (dashed) and aggregate stand apart from ours, under the system's
   name.

Scores (CleanRL's and Machado et al. 2018's conventions): the final score of a run is the mean raw game
score of its last 100 training games; the human-normalized score is HNS = (score - random) / (human -
random) with the random and human scores of DQN Zoo; the aggregate over games is the interquartile mean
(IQM) of every run's HNS with a 95% stratified-bootstrap interval, and the median over games of the mean
HNS, as Agarwal et al. 2021 recommend ("Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS, arXiv 2108.13264).

Usage:
    python benchmark/report.py --extract runs/benchmark/cpu_2M                # every finished run under it
    python benchmark/report.py --extract runs/my_run --command "python ppo_atari.py ..." --doc results/my_run.md
    python benchmark/report.py --extract-peer runs/sb3_a2c/scores.csv --doc results/a2c_vs_sb3.md
    python benchmark/report.py --extract-peer runs/cleanrl_ppo_pong_60min    # a run of cleanrl_run.py
    python benchmark/report.py                                                # figures and README.md
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from cleanrl_run import RECORD as CLEANRL_RECORD  # noqa: E402  (the record of a CleanRL run made here)
from plot_run import rolling_mean  # noqa: E402  (one home for the rolling mean of the curves)

SUMMARIES = HERE / "summaries"
FIGURES = HERE / "figures"
README = HERE / "README.md"
REFERENCE = HERE / "reference"
RECORD = "run.json"  # what benchmark/run.py writes in each run directory

TRAIN, EVAL, SPS = "charts/episodic_return", "eval/episodic_return", "charts/SPS"
TAGS = (TRAIN, EVAL, SPS)  # the only tags a summary keeps
SPS_POINTS = 200  # charts/SPS is logged every update: 200 points draw its shape in a few KB
FINAL_GAMES = 100  # CleanRL reports the mean of the last 100 training games
BOOTSTRAP_REPS = 10_000
BOOTSTRAP_SEED = 0  # a fixed seed: the same summaries give the same interval, digit for digit
HAND_BEGIN = "<!-- hand-written: begin. benchmark/report.py keeps every line from here to the end marker -->"
HAND_END = "<!-- hand-written: end -->"
COLORS = {"ppo": "tab:blue", "dqn": "tab:orange", "a2c": "tab:green", "pqn": "tab:red"}


class UserError(Exception):
    """A mistake in the command line or its inputs: main() prints it as one line and exits 2."""


def final_score(returns: np.ndarray, window: int = FINAL_GAMES) -> float:
    """Mean of the last `window` training games (all of them if fewer), in the order they ended."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) == 0:
        return float("nan")
    return float(returns[-window:].mean())


def last_evaluation(steps: np.ndarray, values: np.ndarray) -> float | None:
    """Mean score of the evaluation games at the last evaluation step, or None if there was none."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    if len(steps) == 0:
        return None
    return float(values[steps == steps.max()].mean())


def human_normalized(score: float, random: float, human: float) -> float:
    """HNS = (score - random) / (human - random): 0 plays like a random agent, 1 like the human tester."""
    return (score - random) / (human - random)


def iqm(scores: np.ndarray) -> np.ndarray | float:
    """Interquartile mean along the last axis: the mean of what is left after cutting int(n/4) scores from
    each end of the sorted n, as scipy.stats.trim_mean(x, 0.25) and rliable's IQM do."""
    scores = np.sort(np.asarray(scores, dtype=np.float64), axis=-1)
    n = scores.shape[-1]
    cut = int(0.25 * n)
    return scores[..., cut : n - cut].mean(axis=-1)


def stratified_bootstrap(scores_by_game: list, statistic=iqm, reps: int = BOOTSTRAP_REPS, level: float = 0.95,
                         seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval of `statistic` over all runs x games, resampling the runs of each game with
    replacement and independently of the other games (Agarwal et al. 2021): games stay fixed, only the
    seeds vary. With one run per game every resample is the data itself, and the interval is one point."""
    rng = np.random.default_rng(seed)
    samples = np.concatenate([np.asarray(s, dtype=np.float64)[rng.integers(0, len(s), size=(reps, len(s)))]
                              for s in scores_by_game], axis=1)  # (reps, all runs of all games)
    values = statistic(samples)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def aggregate(hns_by_game: dict[str, list[float]]) -> dict:
    """IQM of every run's HNS with its 95% interval, and the median over games of each game's mean HNS."""
    games = sorted(hns_by_game)
    scores = [np.asarray(hns_by_game[g], dtype=np.float64) for g in games]
    low, high = stratified_bootstrap(scores)
    return {"games": len(games), "runs": sum(len(s) for s in scores), "iqm": float(iqm(np.concatenate(scores))),
            "ci": (low, high), "median": float(np.median([s.mean() for s in scores]))}


def budget_label(agent_steps: int | None) -> str:
    """10000000 -> '10M', 2500000 -> '2.5M', 64 -> '64'."""
    if agent_steps is None:
        return "?"
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if agent_steps >= size:
            return f"{agent_steps / size:g}{unit}"
    return str(agent_steps)


def game_from_env_id(env_id: str, games: list[str]) -> str:
    """'BreakoutNoFrameskip-v4', 'ALE/Breakout-v5' or 'breakout' -> 'Breakout' (the reference table's name)."""
    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", name)
    key = name.replace("_", "").lower()
    return next((g for g in games if g.lower() == key), name)


def training_seconds(steps: np.ndarray, wall_times: np.ndarray, segments: list[dict]) -> np.ndarray:
    """Seconds of training at each point, the run's own wall-clock: the seconds of the earlier segments
    (processes) plus the time since the start of its own, so a pause between a stop and its resume does not
    count. A segment covers the steps from its first_step to the next segment's, and lasts from its first to
    its last logged point (a process's start-up before its first point is not counted: a few seconds)."""
    firsts = np.array([s["first_step"] for s in segments])
    starts = np.array([s["start_time"] for s in segments])
    durations = np.array([s["end_time"] - s["start_time"] for s in segments])
    offsets = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    index = np.clip(np.searchsorted(firsts, steps, side="right") - 1, 0, len(segments) - 1)
    return offsets[index] + np.asarray(wall_times, dtype=np.float64) - starts[index]


def time_to_threshold(steps: np.ndarray, seconds: np.ndarray | None, scores: np.ndarray, threshold: float,
                      window: int = FINAL_GAMES) -> tuple[int, float | None] | None:
    """(agent step, minutes of training) of the first game after which the mean of the last `window` games
    reaches `threshold`, or None if it never does. Games in the order they ended; `seconds` from
    training_seconds, or None where the summary cannot place its games in time (minutes then None).

    Counted from the `window`-th game on, since one lucky game among fewer could reach it: final_score falls
    back to the games there are, for a run too short to have `window`, but a time to a score does not."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < window:
        return None
    reached = np.flatnonzero(rolling_mean(scores, window)[window - 1 :] >= threshold)
    if len(reached) == 0:
        return None
    i = reached[0] + window - 1
    return int(steps[i]), None if seconds is None else float(seconds[i]) / 60


def thin(count: int, keep: int) -> np.ndarray:
    """Indices of at most `keep` of `count` points, evenly spread, always with the first and the last."""
    if count <= keep:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, keep).round().astype(int))


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def run_result(meta: dict, scalars: dict) -> dict:
    """The numbers of one run, from its summary: final score, games, last evaluation, speed, wall-clock."""
    train = scalars.get(TRAIN, (np.array([]),) * 3)
    evals = scalars.get(EVAL, (np.array([]),) * 3)
    seconds = meta["wall_clock_s"]
    return dict(
        name=meta["name"], algorithm=meta["algorithm"], game=meta["game"], seed=meta["seed"],
        system=meta.get("system"),  # None: this repository's scripts; else a peer's run made here
        preset=meta.get("preset"),  # None: the script's published defaults; else the --preset it ran
        budget=meta["total_timesteps"], agent_steps=meta["agent_steps"], finished=meta.get("finished", True),
        minutes=meta.get("minutes"),  # a peer's time limit: it played agent_steps of the budget its schedules span
        # the epsilon its training games end at, where its settings record one: those games count its random actions
        training_epsilon=(meta.get("settings") or {}).get("end_e"),
        final_score=final_score(train[2]), games=len(train[2]), last_eval=last_evaluation(evals[0], evals[2]),
        wall_clock_h=seconds / 3600, steps_per_s=meta["agent_steps"] / seconds if seconds > 0 else None,
    )


def preset_of(settings: dict | None) -> str | None:
    """The --preset a run of ours ran, or None for the published defaults: every script that has presets names
    its published defaults `cleanrl` (DQN, PQN); a script without presets has no such setting."""
    preset = (settings or {}).get("preset")
    return None if preset in (None, "cleanrl") else str(preset)


def experiment_label(algorithm: str, preset: str | None) -> str:
    """How the table and the figures name an algorithm run at a preset: `pqn --preset fast`."""
    return algorithm + (f" --preset {preset}" if preset else "")


def group_runs(results: list[dict]) -> dict[tuple, list[dict]]:
    """Runs by (game, algorithm, budget, system, preset), seeds in order: the seeds of one experiment. System
    and preset are "" for ours at the defaults, so that those come before a peer's or a preset's run of the
    same game, algorithm and budget."""
    groups: dict[tuple, list[dict]] = {}
    key = lambda r: (r["game"], r["algorithm"], r["budget"], r.get("system") or "", r.get("preset") or "")  # noqa: E731
    for r in sorted(results, key=lambda r: key(r) + (r["seed"],)):
        groups.setdefault(key(r), []).append(r)
    return groups


def table_rows(results: list[dict], baselines: list[dict],
               reference: dict[str, tuple[float, float]]) -> list[list[str]]:
    """Rows of the results table: each experiment of ours (mean over its seeds), then the published scores
    of the same algorithm on the same game, each with its budget and protocol."""
    rows = []
    groups = list(group_runs(results).items())
    for i, ((game, algorithm, budget, system, preset), runs) in enumerate(groups):
        scores = np.array([r["final_score"] for r in runs])
        evals = [r["last_eval"] for r in runs if r["last_eval"] is not None]
        score = fmt(scores.mean()) + (f" ± {scores.std():.1f}" if len(runs) > 1 else "")
        hns = fmt(human_normalized(scores.mean(), *reference[game]), 2) if game in reference else "-"
        speeds = [r["steps_per_s"] for r in runs if r["steps_per_s"] is not None]
        seeds = ", ".join(f"[{r['seed']}](summaries/{r['name']}.json)" for r in runs)
        unfinished = [r for r in runs if not r["finished"]]
        who = f"{system + ', run here' if system else 'this repository'}, seed{'s' if len(runs) > 1 else ''} {seeds}"
        if unfinished:
            who += " **(in progress at " + ", ".join(f"{r['agent_steps']:,}" for r in unfinished) + " steps)**"
        stopped = [r for r in runs if r.get("minutes") and r["agent_steps"] < r["budget"]]
        if stopped:
            who += (" (stopped after " + ", ".join(f"{r['minutes']:g} minutes at {r['agent_steps']:,}" for r in stopped)
                    + " agent steps)")
        protocol = (f"mean of the last {FINAL_GAMES} training games"
                    + (f", mean ± std over {len(runs)} seeds" if len(runs) > 1 else ", 1 seed")
                    + ", NoFrameskip-v4, no sticky actions" + (f", {system}'s own Atari wrappers" if system else "")
                    + "".join(sorted({f", training epsilon {r['training_epsilon']:g}" for r in runs
                                      if r.get("training_epsilon") is not None})))
        rows.append([experiment_label(algorithm, preset), game, budget_label(budget), who, score,
                     fmt(np.mean(evals)) if evals else "-", hns, fmt(np.mean(speeds), 0) if speeds else "-",
                     f"{np.mean([r['wall_clock_h'] for r in runs]):.1f} h", protocol])
        if i + 1 < len(groups) and groups[i + 1][0][:2] == (game, algorithm):
            continue  # the published rows follow the last of this game's and algorithm's experiments
        for b in baselines:
            if b["algorithm"] == algorithm and b["game"] == game:
                b_hns = fmt(human_normalized(b["score"], *reference[game]), 2) if game in reference else "-"
                rows.append([algorithm, game, budget_label(b["agent_steps"]), b["system"], fmt(b["score"]), "-", b_hns,
                             "-", "-", f"{b['protocol']} ({b['source']})"])
    return rows


def aggregate_rows(results: list[dict], reference: dict[str, tuple[float, float]]) -> list[list[str]]:
    """One row per (algorithm, budget): IQM of the HNS of every run of every game, with its 95% interval,
    and the median over games of the mean HNS. Games without reference scores are left out."""
    rows = []
    by_experiment: dict[tuple, dict[str, list[float]]] = {}
    for r in results:
        if r["game"] in reference and np.isfinite(r["final_score"]):
            experiment = (experiment_label(r["algorithm"], r.get("preset")), r["budget"], r.get("system") or "")
            by_game = by_experiment.setdefault(experiment, {})
            by_game.setdefault(r["game"], []).append(human_normalized(r["final_score"], *reference[r["game"]]))
    for (algorithm, budget, system), by_game in sorted(by_experiment.items()):
        a = aggregate(by_game)
        rows.append([algorithm + (f" ({system})" if system else ""), budget_label(budget), str(a["games"]), str(a["runs"]),
                     f"{a['iqm']:.2f} [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}]", f"{a['median']:.2f}"])
    return rows


def score_time_tables(loaded: list[tuple[dict, dict]], thresholds: dict[str, list[float]],
                      links: bool = True) -> list[tuple[str, list[str], list[list[str]]]]:
    """(game, header, rows) per game with thresholds: one row per run (summary), and for each threshold the
    agent steps and the minutes of training until the mean of the last 100 training games first reached it,
    "-" where it never did. `links`: the run as a link to its summary (the page), else its name (a terminal).
    A summary without process segments (extracted before they were recorded) has steps but no minutes,
    and its note says so."""
    runs: dict[str, list[tuple[dict, dict]]] = {}
    for meta, scalars in loaded:
        if meta["game"] in thresholds:
            runs.setdefault(meta["game"], []).append((meta, scalars))
    order = lambda run: (run[0]["algorithm"], run[0]["total_timesteps"], run[0].get("system") or "",  # noqa: E731
                         run[0].get("preset") or "", run[0]["seed"])
    tables = []
    for game in sorted(runs):
        header = ["algorithm", "budget", "run", f"best mean of {FINAL_GAMES}"]
        for t in thresholds[game]:
            header += [f"≥ {t:g} agent steps", f"≥ {t:g} minutes"]
        rows, notes = [], []
        for meta, scalars in sorted(runs[game], key=order):
            steps, times, scores = scalars.get(TRAIN, (np.array([], dtype=np.int64), np.array([]), np.array([])))
            seconds, note = None, ""
            if len(scores) < FINAL_GAMES:
                note = f"{len(scores)} training games, fewer than {FINAL_GAMES}: no mean of {FINAL_GAMES} yet"
            elif not meta.get("segments"):
                note = "no process segments in the summary (extracted before they were recorded): extract it again"
            else:
                seconds = training_seconds(steps, times, meta["segments"])
            run = f"[{meta['name']}](summaries/{meta['name']}.json)" if links else meta["name"]
            if meta.get("system") and links:  # a terminal's name ends in the peer's short name already
                run += f" ({meta['system']}, run here)"
            if not meta.get("finished", True):
                run += f" (in progress at {meta['agent_steps']:,} steps)"
            best = rolling_mean(scores, FINAL_GAMES)[FINAL_GAMES - 1 :].max() if len(scores) >= FINAL_GAMES else None
            row = [experiment_label(meta["algorithm"], meta.get("preset")), budget_label(meta["total_timesteps"]), run,
                   fmt(best)]
            for t in thresholds[game]:
                reached = time_to_threshold(steps, seconds, scores, t)
                row += ["-", "-"] if reached is None else [f"{reached[0]:,}", fmt(reached[1])]
            rows.append(row)
            notes.append(note)
        if any(notes):
            header.append("note")
            rows = [row + [note] for row, note in zip(rows, notes)]
        tables.append((game, header, rows))
    return tables


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, for a terminal."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header, *rows])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def merge_hand_written(old: str | None, new: str) -> str:
    """`new`, with the hand-written block of `old` (between the markers) in place of its own placeholder."""
    if old is None:
        return new
    if HAND_BEGIN not in old or HAND_END not in old:
        raise UserError("benchmark/README.md has no hand-written markers, so regenerating it would lose its text: "
                        f"put the lines to keep between '{HAND_BEGIN}' and '{HAND_END}', or move the file away")
    kept = old[old.index(HAND_BEGIN) : old.index(HAND_END)]
    return new[: new.index(HAND_BEGIN)] + kept + new[new.index(HAND_END) :]


def load_reference(path: Path = REFERENCE / "atari_random_human.csv") -> dict[str, tuple[float, float]]:
    with open(path, newline="") as f:
        return {row["game"]: (float(row["random"]), float(row["human"])) for row in csv.DictReader(f)}


def load_baselines(path: Path = REFERENCE / "published_baselines.csv") -> list[dict]:
    """The published scores, a protocol of 'same' replaced by the one of the row above."""
    rows, protocol = [], ""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            protocol = protocol if row["protocol"] == "same" else row["protocol"]
            rows.append(dict(row, protocol=protocol, score=float(row["score"]),
                             agent_steps=int(row["agent_steps"]) if row["agent_steps"] else None))
    return rows


def load_thresholds(path: Path = REFERENCE / "score_thresholds.csv") -> dict[str, list[float]]:
    """Game -> its score thresholds, ascending: the scores whose time the report gives."""
    thresholds: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            thresholds.setdefault(row["game"], []).append(float(row["threshold"]))
    return {game: sorted(values) for game, values in thresholds.items()}


def repo_relative(path: Path) -> str:
    """A path as the repository names it, or only its last part outside the repository: what benchmark/
    commits names no one machine's directories."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def events_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents.*"))  # names start with the creation time: oldest first


def first_steps(run_dir: Path) -> list[int]:
    """The first step of each events file's process: the purge step it wrote when it resumed (SessionLog
    START, which hides every earlier event at a step >= it), else its first event's step; 0 for the first."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    firsts = []
    for i, path in enumerate(events_files(run_dir)):
        first = 0 if i == 0 else None
        for n, event in enumerate(EventFileLoader(str(path)).Load()):
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                first = event.step
                break
            if first is None and event.HasField("summary"):
                first = event.step
            if n >= 8:  # the purge marker comes right after the file header
                break
        if first is not None:
            firsts.append(first)
    return firsts


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(tag -> (steps, wall_times, values) for TAGS, segments) from a run directory's events files.

    Segments are the processes that wrote the run (one per start or resume): each covers the steps from its
    first to the next one's, and lasts from its first to its last surviving point of any scalar tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Its purge on resume is expected here, not news: TensorBoard would log a warning for each resume.
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()  # 0: keep every event
    every = []
    scalars = {}
    for tag in events.Tags()["scalars"]:
        points = sorted(events.Scalars(tag), key=lambda e: e.step)  # stable: games ending at one step keep order
        every += [(e.step, e.wall_time) for e in points]
        if tag in TAGS:
            scalars[tag] = (np.array([e.step for e in points], dtype=np.int64), np.array([e.wall_time for e in points]),
                            np.array([e.value for e in points], dtype=np.float64))
    if not every:
        raise UserError(f"'{run_dir}' has no scalars in its events files")
    steps, times = np.array([s for s, _ in every]), np.array([t for _, t in every])
    bounds = first_steps(run_dir) + [np.inf]
    segments = []
    for first, nxt in zip(bounds[:-1], bounds[1:]):
        inside = (steps >= first) & (steps < nxt)
        if inside.any():  # a process whose every step a later one purged left nothing to time
            segments.append({"first_step": int(first), "last_step": int(steps[inside].max()),
                             "start_time": float(times[inside].min()), "end_time": float(times[inside].max())})
    return scalars, segments


def run_metadata(run_dir: Path, games: list[str]) -> dict:
    """Algorithm, game, seed, budget, commands, settings and whether it finished: from benchmark/run.py's
    run.json when there is one, else from the model file (or the checkpoint of an unfinished run)."""
    record_path = run_dir / RECORD
    if record_path.exists():
        try:
            record = json.loads(record_path.read_text())
            entry = record["entry"]
        except (ValueError, KeyError) as e:
            raise UserError(f"cannot read '{record_path}' ({type(e).__name__}: {e}): not a record of benchmark/run.py")
        runs_parent = str(run_dir.resolve().parent)
        commands = [a["command"] for a in record.get("attempts", [])]
        if not run_dir.resolve().is_relative_to(REPO):  # a runs directory of one machine: say so, not where
            commands = [c.replace(runs_parent, "$RUNS_DIR") for c in commands]
        return dict(algorithm=entry["algorithm"], game=entry["game"], seed=entry["seed"],
                    total_timesteps=entry["total_timesteps"], env_id=entry.get("env_id"), list=entry.get("list"),
                    commands=commands,
                    commits=list(dict.fromkeys(a.get("commit", "unknown") for a in record.get("attempts", []))),
                    finished=record.get("exit_status") == 0 and any(run_dir.glob("*.model")),
                    settings=record.get("settings"), preset=preset_of(record.get("settings")))
    import torch  # only for runs without a record: their model file says what they are

    models = sorted(run_dir.glob("*.model"))
    source = models[0] if models else run_dir / "checkpoint.pt"
    if not source.exists():
        if (run_dir / CLEANRL_RECORD).exists():
            raise UserError(f"'{run_dir}' is a run of CleanRL's (benchmark/cleanrl_run.py): summarize it with "
                            "--extract-peer")
        raise UserError(f"'{run_dir}' has no run.json, model file or checkpoint.pt: cannot tell what it ran")
    try:
        saved = torch.load(source, map_location="cpu", weights_only=True)
        settings = saved["args"]
    except Exception as e:
        raise UserError(f"cannot read '{source}' ({type(e).__name__}): not a model file or checkpoint of these scripts")
    return dict(algorithm=saved["algo"], game=game_from_env_id(saved["env_id"], games), seed=settings["seed"],
                total_timesteps=settings["total_timesteps"], env_id=saved["env_id"], list=None, commands=[],
                commits=[], finished=bool(models), settings=settings, preset=preset_of(settings))


def summary_name(meta: dict) -> str:
    """{game}__{algo}__{seed}__{budget}, and __{preset} for a run at a --preset other than the defaults."""
    preset = f"__{meta['preset']}" if meta.get("preset") else ""
    return f"{meta['game']}__{meta['algorithm']}__{meta['seed']}__{budget_label(meta['total_timesteps'])}{preset}"


def write_summary(out_dir: Path, meta: dict, scalars: dict) -> Path:
    """{name}.csv (tag,step,wall_time,value) and {name}.json; returns the csv's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{meta['name']}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag", "step", "wall_time", "value"])
        for tag in TAGS:
            if tag not in scalars:
                continue
            steps, times, values = scalars[tag]
            keep = thin(len(steps), SPS_POINTS) if tag == SPS else np.arange(len(steps))
            writer.writerows((tag, int(steps[i]), f"{times[i]:.1f}", f"{values[i]:.6g}") for i in keep)
    (out_dir / f"{meta['name']}.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return path


def extract(run_dir: Path, out_dir: Path, games: list[str], commands: list[str], doc: str | None,
            allow_unfinished: bool) -> Path | None:
    """Summarize one run directory into out_dir; None (with a message) for an unfinished run."""
    meta = run_metadata(run_dir, games)
    if not meta["finished"] and not allow_unfinished:
        print(f"skipped {run_dir}: not finished (no model file, or its last attempt did not exit 0); "
              f"--allow-unfinished extracts it marked in progress", file=sys.stderr)
        return None
    scalars, segments = read_run(run_dir)
    agent_steps = max(int(s[0].max()) for s in scalars.values()) if scalars else 0
    meta = dict(name=summary_name(meta), **meta, agent_steps=agent_steps,
                wall_clock_s=round(sum(s["end_time"] - s["start_time"] for s in segments), 1),
                segments=segments, source=repo_relative(run_dir))
    meta["commands"] = meta["commands"] or commands
    if doc:
        meta["doc"] = doc
    return write_summary(out_dir, meta, scalars)


def sb3_peer_run(scores_csv: Path) -> tuple[dict, dict, list[dict]]:
    """(record, scalars, segments) of a run of benchmark/sb3_speed.py --scores: each game's agent step, score
    and its time since the start (SB3's Monitor) from the CSV, what ran from the record beside it."""
    record_path = scores_csv.with_suffix(".json")
    if not scores_csv.is_file():
        raise UserError(f"peer run '{scores_csv}' does not exist: give the scores CSV of sb3_speed.py --scores or "
                        "the run directory of cleanrl_run.py")
    if not record_path.is_file():
        raise UserError(f"'{record_path}' does not exist: the peer run has not finished (sb3_speed.py writes it "
                        "when learning ends)")
    try:
        record = json.loads(record_path.read_text())
        with open(scores_csv, newline="") as f:
            games_rows = [(int(r["agent_step"]), float(r["seconds"]), float(r["score"])) for r in csv.DictReader(f)]
        seconds = float(record["seconds"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the peer run '{scores_csv}' ({type(e).__name__}: {e}): not written by "
                        "sb3_speed.py --scores")
    scalars = {TRAIN: tuple(np.array(c) for c in zip(*games_rows))} if games_rows else {}
    return record, scalars, [{"start_time": 0.0, "end_time": seconds}]


def cleanrl_peer_run(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """(record, scalars, segments) of a run directory of benchmark/cleanrl_run.py: CleanRL's events
    (charts/episodic_return: whole games, raw scores; charts/SPS), timed from the events' first record (the
    writer's creation, where cleanrl_run.py's clock starts) to their last point, and its record."""
    record_path = run_dir / CLEANRL_RECORD
    if not record_path.is_file():
        raise UserError(f"'{run_dir}' has no {CLEANRL_RECORD}: not a finished run of benchmark/cleanrl_run.py "
                        "(it writes it when CleanRL stops)")
    files = events_files(run_dir)
    if not files:
        raise UserError(f"'{run_dir}' has no TensorBoard events files: CleanRL logged nothing")
    if len(files) > 1:
        raise UserError(f"'{run_dir}' holds {len(files)} TensorBoard events files, where a run of cleanrl_run.py "
                        "leaves one")
    try:
        record = json.loads(record_path.read_text())
    except ValueError as e:
        raise UserError(f"cannot read '{record_path}' ({e}): not a record of cleanrl_run.py")
    if record.get("finished") is not True:
        raise UserError(f"'{record_path}' does not mark the run finished")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    header = next(iter(EventFileLoader(str(files[0])).Load()), None)  # written when the writer was created
    if header is None:
        raise UserError(f"'{files[0]}' is empty: CleanRL logged nothing")
    scalars, segments = read_run(run_dir)
    return record, scalars, [{"start_time": header.wall_time, "end_time": segments[-1]["end_time"]}]


def extract_peer(path: Path, out_dir: Path, games: list[str], commands: list[str], doc: str | None) -> Path:
    """Summarize a peer's finished learning run into out_dir: a scores CSV of benchmark/sb3_speed.py --scores,
    or a run directory of benchmark/cleanrl_run.py. The run is one process; its budget is the one its
    schedules span (the record's budget; an older SB3 record has none, and its steps are its budget), and
    its agent steps are those it played (fewer where --minutes stopped it)."""
    record, scalars, (segment,) = cleanrl_peer_run(path) if path.is_dir() else sb3_peer_run(path)
    try:
        algorithm, env_id, seed, steps = record["algo"], record["env_id"], int(record["seed"]), int(record["steps"])
        budget, system = int(record.get("budget", steps)), str(record["system"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"cannot read the record of the peer run '{path}' ({type(e).__name__}: {e})")
    peer = re.sub(r"[^a-z0-9]+", "", system.split()[0].lower().replace("stable-baselines", "sb"))  # sb3, cleanrl
    meta = dict(algorithm=algorithm, game=game_from_env_id(env_id, games), seed=seed, total_timesteps=budget,
                env_id=env_id, list=None, system=system, minutes=record.get("minutes"),
                commands=commands or ([record["command"]] if record.get("command") else []), commits=[], finished=True,
                settings=record.get("settings"))
    limit = f"__{meta['minutes']:g}min" if meta["minutes"] else ""  # apart from a full run of the same budget
    meta = dict(name=f"{summary_name(meta)}__{peer}{limit}", **meta, agent_steps=steps,
                wall_clock_s=round(segment["end_time"] - segment["start_time"], 1),
                segments=[{"first_step": 0, "last_step": steps, **segment}], source=repo_relative(path))
    if doc:
        meta["doc"] = doc
    return write_summary(out_dir, meta, scalars)


def run_dirs(paths: list[Path]) -> list[Path]:
    """Each path that holds events files, or else each run directory inside it (moved-aside ones excluded)."""
    found = []
    for path in paths:
        if not path.is_dir():
            raise UserError(f"run directory '{path}' does not exist")
        if events_files(path):
            found.append(path)
            continue
        inside = [d for d in sorted(path.iterdir()) if d.is_dir() and ".stale-" not in d.name and events_files(d)]
        if not inside:
            raise UserError(f"'{path}' holds no TensorBoard events files, nor run directories that do")
        found += inside
    return found


def load_summaries(summaries: Path) -> list[tuple[dict, dict]]:
    """(metadata, tag -> (steps, wall_times, values)) of every summary in the directory."""
    loaded = []
    for meta_path in sorted(summaries.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        columns: dict[str, list] = {}
        if not meta_path.with_suffix(".csv").exists():
            raise UserError(f"'{meta_path}' has no .csv beside it: extract the run again")
        with open(meta_path.with_suffix(".csv"), newline="") as f:
            for row in csv.DictReader(f):
                point = (int(row["step"]), float(row["wall_time"]), float(row["value"]))
                columns.setdefault(row["tag"], []).append(point)
        scalars = {tag: tuple(np.array(c) for c in zip(*points)) for tag, points in columns.items()}
        scalars = {tag: (s.astype(np.int64), t, v) for tag, (s, t, v) in scalars.items()}
        if not meta.get("system"):  # ours, extracted before summaries named their preset: from its settings
            meta.setdefault("preset", preset_of(meta.get("settings")))
        loaded.append((meta, scalars))
    return loaded


def curve_style(algorithm: str, budget: int, system: str, panel: Iterable[tuple],
                preset: str = "") -> tuple[tuple, str]:
    """(RGB colour, line style) of one curve in a panel of (algorithm, budget, system, ...) curves: each
    algorithm has its colour, a smaller budget than the algorithm's largest in the panel a paler shade of it
    (so that a 2M run stays apart from the 10M run it overlaps), a peer's run is dashed, and a run at a
    --preset dash-dotted."""
    from matplotlib.colors import to_rgb

    color = to_rgb(COLORS.get(algorithm, "tab:gray"))
    if budget < max(key[1] for key in panel if key[0] == algorithm):
        color = tuple(0.45 * c + 0.55 for c in color)  # 55% of the way to white
    return color, "--" if system else "-." if preset else "-"


def plot_curves(loaded: list[tuple[dict, dict]], x_axis: str, path: Path,
                thresholds: dict[str, list[float]] | None = None) -> None:
    """One panel per game; per algorithm and budget, the mean over seeds of each seed's rolling mean of its
    last 100 games on a common grid (where every seed has data), the min-max band over seeds around it; the
    game's score thresholds as dotted horizontal lines. Against hours, a summary without process segments
    cannot be placed in time and is left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    by_game: dict[str, dict[tuple, list]] = {}
    for meta, scalars in loaded:
        if TRAIN not in scalars or (x_axis == "hours" and not meta.get("segments")):
            continue
        steps, times, values = scalars[TRAIN]
        x = steps / 1e6 if x_axis == "steps" else training_seconds(steps, times, meta["segments"]) / 3600
        key = (meta["algorithm"], meta["total_timesteps"], meta.get("system") or "", meta.get("preset") or "")
        by_game.setdefault(meta["game"], {}).setdefault(key, []).append((x, rolling_mean(values, FINAL_GAMES)))
    games = sorted(by_game)
    cols = max(1, min(3, len(games)))
    rows = max(1, -(-len(games) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 5.0 * rows), dpi=110, squeeze=False)
    for ax, game in zip(axes.flat, games):
        for (algorithm, budget, system, preset), seeds in sorted(by_game[game].items()):
            low, high = max(x[0] for x, _ in seeds), min(x[-1] for x, _ in seeds)
            grid = np.linspace(low, high, 300)
            curves = np.array([np.interp(grid, x, y) for x, y in seeds])
            color, linestyle = curve_style(algorithm, budget, system, by_game[game], preset)
            label = (f"{experiment_label(algorithm, preset)} {budget_label(budget)}" + (f", {system}" if system else "")
                     + f" ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
            ax.plot(grid, curves.mean(axis=0), color=color, linewidth=1.5, label=label, linestyle=linestyle)
            if len(seeds) > 1:
                ax.fill_between(grid, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.2, linewidth=0)
        for i, t in enumerate((thresholds or {}).get(game, [])):
            ax.axhline(t, color="0.35", linestyle=":", linewidth=1, label="score thresholds" if i == 0 else None)
            ax.text(0.01, t, f"{t:g}", transform=ax.get_yaxis_transform(), fontsize=7, color="0.35", va="bottom")
        ax.set_title(game)
        ax.set_xlabel("agent steps (millions; 1 agent step = 4 frames)" if x_axis == "steps"
                      else "wall-clock hours of training")
        ax.set_ylabel(f"score, mean of the last {FINAL_GAMES} games")
        ax.grid(alpha=0.3)
        # below the panel, not over it: a translucent legend over a curve reads as a paler, other curve
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=2, frameon=False)
    for ax in list(axes.flat)[len(games):]:
        ax.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})  # no version stamp: the same summaries give the same file
    plt.close(fig)


def render_readme(loaded: list[tuple[dict, dict]], results: list[dict], baselines: list[dict],
                  reference: dict, figures: list[str], thresholds: dict[str, list[float]]) -> str:
    """The results page, from the summaries only (no dates, no machine paths: regenerating changes nothing)."""
    header = ["algorithm", "game", "budget (agent steps)", "who", "score", "last evaluation", "HNS", "agent steps/s",
              "wall-clock", "protocol (source)"]
    lines = [
        "# Benchmark results",
        "",
        "<!-- Generated by benchmark/report.py from benchmark/summaries/; edit only the hand-written block. -->",
        "",
        "Scores of this repository's scripts beside published ones, and beside a peer's runs made here on the",
        "same budget. Every number comes from a summary file in `summaries/`, and the last section gives, for each",
        "run, the commands that made it. To add runs: run a list, summarize its finished runs, rebuild this page:",
        "",
        "```bash",
        "python benchmark/run.py cpu_2M            # a run list of benchmark/lists/: cpu_2M, three_games, atari5,",
        "                                          # atari57; --parallel K, or --slurm for an array job",
        "python benchmark/report.py --extract runs/benchmark/cpu_2M   # summaries of the finished runs",
        "python benchmark/report.py --extract-peer scores.csv         # a peer's run: sb3_speed.py --scores,",
        "                                                             # or cleanrl_run.py's --out directory",
        "python benchmark/report.py                # this page and figures/, from summaries/ alone",
        "```",
        "",
        "## Results",
        "",
        f"Score: the mean raw game score of the last {FINAL_GAMES} training games of a run (whole games, all lives;",
        "CleanRL's measure), averaged over seeds. Last evaluation: the mean of the evaluation games at the last",
        "evaluation step, where the script logged one. HNS: human-normalized score, (score - random) / (human -",
        "random), random and human scores from DQN Zoo (`reference/atari_random_human.csv`). Agent steps/s and",
        "wall-clock: over the processes whose steps the curve keeps (pauses between resumes excluded; a run that",
        "shared its machine or was paused is slower than the machine). Published rows come from",
        "`reference/published_baselines.csv`; protocols differ, so compare numbers of one protocol.",
        "",
        markdown_table(header, table_rows(results, baselines, reference)),
        "",
        "## Aggregate over games",
        "",
        "Per algorithm and budget: the interquartile mean (IQM) of the HNS of every run of every game, with a",
        f"95% stratified-bootstrap interval ({BOOTSTRAP_REPS:,} resamples of the seeds within each game, random",
        f"seed {BOOTSTRAP_SEED}), and the median over games of each game's mean HNS (Agarwal et al. 2021, arXiv",
        "2108.13264). With one run per game the interval is a single point: it measures the spread over seeds,",
        "and there is none to measure. Over one or two games, neither says much about Atari as a whole.",
        "",
        markdown_table(["algorithm", "budget", "games", "runs", "IQM of HNS [95% CI]", "median HNS"],
                       aggregate_rows(results, reference)),
        "",
        "## Time to a score",
        "",
        "How long until an agent plays a game: per run, and per score threshold of its game",
        "(`reference/score_thresholds.csv`, with why each), the agent steps and the minutes of training until",
        f"the mean of the last {FINAL_GAMES} training games first reached the threshold; \"-\" where it never did.",
        f"Counted from the {FINAL_GAMES}th game on, since one lucky game among fewer could reach it (the score column",
        f"above takes all the games of a run shorter than {FINAL_GAMES}). Best mean of {FINAL_GAMES}: the highest the",
        "mean came, to say how near a \"-\" was. Minutes: the run's own wall-clock, the time inside its processes",
        "only (each from its first to its last logged point), so the pauses between a stop and its resume are",
        "left out; a game counts at the time its score was logged. They depend on the machine and on what else",
        "ran on it: each run's page (under \"Where each number comes from\") says how it ran. The figures draw the",
        "thresholds as dotted lines.",
        "",
    ]
    for game, header, rows in score_time_tables(loaded, thresholds):
        lines += [f"**{game}**", "", markdown_table(header, rows), ""]
    lines += [
        "## Learning curves",
        "",
    ]
    for name, caption in figures:
        lines += [f"![{caption}](figures/{name})", ""]
    lines += [
        HAND_BEGIN,
        "## Speed",
        "",
        "(Hand-written: measured speed, with its machine and command. benchmark/report.py keeps this block.)",
        HAND_END,
        "",
        "## Where each number comes from",
        "",
    ]
    for meta, _ in loaded:
        result = next(r for r in results if r["name"] == meta["name"])
        lines += [
            f"### {meta['game']}, {experiment_label(meta['algorithm'], meta.get('preset'))}"
            + (f" ({meta['system']}, run here)" if meta.get("system") else "")
            + f", seed {meta['seed']}, {budget_label(meta['total_timesteps'])} agent steps"
            + ("" if meta.get("finished", True) else " (in progress)"),
            "",
            f"- summary: [`summaries/{meta['name']}.csv`](summaries/{meta['name']}.csv) (every game's score),"
            f" [`.json`](summaries/{meta['name']}.json) (settings, segments); extracted from `{meta['source']}`"
            + (f"; about the run: [`{meta['doc']}`]({os.path.relpath(REPO / meta['doc'], HERE)})"
               if meta.get("doc") else ""),
            f"- {result['agent_steps']:,} agent steps in {result['wall_clock_h']:.1f} h of training over "
            f"{len(meta.get('segments', []))} process{'es' if len(meta.get('segments', [])) != 1 else ''}; "
            f"{result['games']:,} training games, "
            f"score {fmt(result['final_score'])}, last evaluation {fmt(result['last_eval'])}"
            + (f"; commit{'s' if len(meta['commits']) > 1 else ''} {', '.join(c[:7] for c in meta['commits'])}"
               if meta.get("commits") else ""),
        ]
        if meta.get("commands"):
            lines += ["", "```bash", *meta["commands"], "```"]
        else:
            lines += ["- command: not recorded"]
        lines.append("")
    return "\n".join(lines)


def regenerate(summaries: Path, figures_dir: Path, readme: Path) -> None:
    loaded = load_summaries(summaries)
    if not loaded:
        raise UserError(f"no summaries in '{summaries}': extract some first with --extract RUN_DIR")
    reference, baselines = load_reference(), load_baselines()
    results = [run_result(meta, scalars) for meta, scalars in loaded]
    thresholds = load_thresholds()
    figures = [("curves_steps.png", "Score against agent steps"),
               ("curves_hours.png", "Score against wall-clock hours")]
    plot_curves(loaded, "steps", figures_dir / figures[0][0], thresholds)
    plot_curves(loaded, "hours", figures_dir / figures[1][0], thresholds)
    old = readme.read_text() if readme.exists() else None
    readme.write_text(merge_hand_written(old, render_readme(loaded, results, baselines, reference, figures,
                                                            thresholds)))
    print(f"Time to a score: agent steps and minutes of training until the mean of the last {FINAL_GAMES} training "
          "games first reached each threshold (- never)")
    for game, header, rows in score_time_tables(loaded, thresholds, links=False):
        print(f"\n{game}\n{text_table(header, rows)}")
    print()
    print(f"wrote {readme} and {figures_dir}/curves_steps.png, curves_hours.png from {len(loaded)} summaries")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other mistake
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--extract", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories, or runs roots holding them, to summarize into --summaries")
    parser.add_argument("--extract-peer", type=Path, metavar="PEER_RUN",
                        help="a peer's learning run made here to summarize: the scores CSV of benchmark/sb3_speed.py "
                             "--scores, or the run directory of benchmark/cleanrl_run.py")
    parser.add_argument("--command", action="append", default=[],
                        help="with one run directory without run.json, or --extract-peer: a command that made it "
                             "(repeatable; a run of cleanrl_run.py records its own)")
    parser.add_argument("--doc", help="with one run directory or --extract-peer: a page about the run, relative to "
                                      "the repository")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="extract unfinished runs too, marked in progress")
    parser.add_argument("--summaries", type=Path, default=SUMMARIES, help="the summaries directory")
    parser.add_argument("--figures", type=Path, default=FIGURES, help="where the figures go")
    parser.add_argument("--readme", type=Path, default=README, help="the results page to write")
    args = parser.parse_args(argv)
    try:
        if args.doc and not (REPO / args.doc).is_file():
            raise UserError(f"--doc '{args.doc}' is not a file relative to the repository root")
        if args.extract and args.extract_peer:
            raise UserError("--extract and --extract-peer summarize one kind of run each: give one of them")
        if args.extract_peer:
            written = [extract_peer(args.extract_peer, args.summaries, list(load_reference()), args.command, args.doc)]
        elif args.extract:
            dirs = run_dirs(args.extract)
            if (args.command or args.doc) and len(dirs) > 1:
                raise UserError(f"--command and --doc describe one run, but {len(dirs)} run directories were given")
            games = list(load_reference())
            written = [extract(d, args.summaries, games, args.command, args.doc, args.allow_unfinished) for d in dirs]
        else:
            regenerate(args.summaries, args.figures, args.readme)
            return 0
        for path in filter(None, written):
            print(f"wrote {path} and {path.with_suffix('.json').name} ({path.stat().st_size / 1000:.0f} KB)")
        print(f"next: python {shlex.quote(os.path.relpath(__file__))}  (figures and README.md from the summaries)")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
