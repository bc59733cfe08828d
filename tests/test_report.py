"""benchmark/report.py: summaries from TensorBoard events, the score arithmetic, the table and the page.

The event files are written here with torch's SummaryWriter, as the training scripts write theirs, with
wall times set by hand so that every duration is known."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import matplotlib.colors
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmark"))

import report  # noqa: E402

T0 = 1_800_000_000.0  # wall time of the first point, seconds since 1970


def write_process(run_dir, index, purge_step, scalars):
    """One process's events file, as a start (purge_step None) or a resume writes it. `scalars`: (tag, step,
    value, wall_time) in logging order. The file is named so that it sorts after the earlier ones."""
    from torch.utils.tensorboard import SummaryWriter

    scratch = run_dir.parent / f"writer{index}"
    writer = SummaryWriter(str(scratch), purge_step=purge_step)
    for tag, step, value, wall_time in scalars:
        writer.add_scalar(tag, value, step, walltime=wall_time)
    writer.close()
    (written,) = scratch.glob("events.out.tfevents.*")
    shutil.move(str(written), run_dir / f"events.out.tfevents.{1_800_000_000 + index}.host.{index}.0")
    scratch.rmdir()


@pytest.fixture
def resumed_run(tmp_path):
    """A PPO Breakout run of 120 steps, stopped after its checkpoint at step 50 and resumed from it.

    Process 1 (1 s per step from T0) logged games at steps 10, 20, ..., 70 and SPS at every step 1-70,
    then stopped; its checkpoint was at step 50, so the resume purges its steps >= 51. Process 2 starts an
    hour later (T0 + 3600 + step) and logs games at 60, 80, ..., 120, SPS at 51-120 and three evaluation
    games at step 120. run.json and a model file say it finished, as benchmark/run.py leaves a run."""
    run_dir = tmp_path / "runs" / "Breakout__ppo__1"
    run_dir.mkdir(parents=True)
    first = [("charts/SPS", s, 100.0 + s, T0 + s) for s in range(1, 71)]
    first += [("charts/episodic_return", s, s / 10, T0 + s) for s in range(10, 71, 10)]
    write_process(run_dir, 0, None, sorted(first, key=lambda p: p[1]))
    second = [("charts/SPS", s, 200.0, T0 + 3600 + s) for s in range(51, 121)]
    second += [("charts/episodic_return", s, s / 10, T0 + 3600 + s) for s in range(60, 121, 20)]
    second += [("eval/episodic_return", 120, v, T0 + 3600 + 121) for v in (3.0, 4.0, 8.0)]
    write_process(run_dir, 1, 51, sorted(second, key=lambda p: p[1]))
    (run_dir / "ppo_atari.model").write_bytes(b"")  # run.json is what tells the report; the model must exist
    entry = {"algorithm": "ppo", "game": "Breakout", "seed": 1, "total_timesteps": 120, "flags": [], "list": "tiny",
             "env_id": "BreakoutNoFrameskip-v4"}
    attempts = [{"command": "python ppo_atari.py --env-id BreakoutNoFrameskip-v4 --total-timesteps 120",
                 "commit": "abc", "exit_status": 130},
                {"command": "python ppo_atari.py --resume runs/Breakout__ppo__1 --total-timesteps 120", "commit": "abc",
                 "exit_status": 0}]
    (run_dir / "run.json").write_text(json.dumps({"entry": entry, "attempts": attempts, "exit_status": 0,
                                                  "settings": {"seed": 1, "total_timesteps": 120}}))
    return run_dir


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_extract_follows_tensorboard_purge_and_times_each_process(resumed_run, tmp_path):
    path = report.extract(resumed_run, tmp_path / "summaries", list(report.load_reference()), [], None, False)
    assert path.name == "Breakout__ppo__1__120.csv"
    rows = read_csv(path)
    assert list(rows[0]) == ["tag", "step", "wall_time", "value"]
    returns = [(int(r["step"]), float(r["value"])) for r in rows if r["tag"] == "charts/episodic_return"]
    # process 1's games at 60 and 70 came after its checkpoint: the resume's purge dropped them
    assert returns == [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0), (50, 5.0), (60, 6.0), (80, 8.0), (100, 10.0),
                       (120, 12.0)]
    sps = [int(r["step"]) for r in rows if r["tag"] == "charts/SPS"]
    assert sps == list(range(1, 121))  # 120 points: fewer than the 200 kept, so all of them
    assert [float(r["value"]) for r in rows if r["tag"] == "eval/episodic_return"] == [3.0, 4.0, 8.0]

    meta = json.loads(path.with_suffix(".json").read_text())
    assert (meta["algorithm"], meta["game"], meta["seed"], meta["total_timesteps"]) == ("ppo", "Breakout", 1, 120)
    assert meta["agent_steps"] == 120 and meta["finished"] is True
    assert meta["commands"][1].startswith("python ppo_atari.py --resume")
    # segment 1: steps 1-50 over 49 s (T0+1 to T0+50); segment 2: steps 51-120 over 70 s (T0+3651 to T0+3721)
    assert [(s["first_step"], s["last_step"]) for s in meta["segments"]] == [(0, 50), (51, 120)]
    assert meta["wall_clock_s"] == pytest.approx(49 + 70)
    assert meta["source"] == "Breakout__ppo__1"  # outside the repository: the name only, no machine path


def test_sps_is_thinned_and_every_game_kept(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    points = [("charts/SPS", s, 300.0, T0 + s) for s in range(1, 5001)]
    points += [("charts/episodic_return", s, 1.0, T0 + s) for s in range(3, 5001, 3)]
    write_process(run_dir, 0, None, sorted(points, key=lambda p: p[1]))
    scalars, segments = report.read_run(run_dir)
    meta = {"name": "x", "segments": segments}
    rows = read_csv(report.write_summary(tmp_path / "out", meta, scalars))
    sps = [int(r["step"]) for r in rows if r["tag"] == "charts/SPS"]
    assert len(sps) <= report.SPS_POINTS and sps[0] == 1 and sps[-1] == 5000
    assert sum(r["tag"] == "charts/episodic_return" for r in rows) == len(range(3, 5001, 3))


def test_human_normalized_by_hand():
    reference = report.load_reference()
    assert len(reference) == 57 and reference["Breakout"] == (1.7, 30.5) and reference["Pong"] == (-20.7, 14.6)
    assert report.human_normalized(40.2, *reference["Breakout"]) == pytest.approx((40.2 - 1.7) / 28.8)  # 1.337
    assert report.human_normalized(-14.4, *reference["Pong"]) == pytest.approx(6.3 / 35.3)  # 0.178
    assert report.human_normalized(1.7, 1.7, 30.5) == 0.0 and report.human_normalized(30.5, 1.7, 30.5) == 1.0


def test_final_score_is_the_mean_of_the_last_100_games():
    assert report.final_score(np.arange(150)) == pytest.approx(np.mean(range(50, 150)))  # 99.5
    assert report.final_score([1.0, 2.0, 6.0]) == 3.0  # fewer than 100: all of them
    assert np.isnan(report.final_score([]))


def test_last_evaluation_is_the_mean_at_the_last_evaluation_step():
    assert report.last_evaluation([100, 100, 200, 200, 200], [1, 3, 4, 5, 9]) == 6.0
    assert report.last_evaluation([], []) is None


def test_iqm_by_hand():
    assert report.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # cut 2 from each end of 1..8: mean of 3, 4, 5, 6
    assert report.iqm([0, 10, 10, 10, 10, 10, 10, 10, 10, 1000]) == 10.0  # n 10, cut 2: the outliers go
    assert report.iqm([0, 1, 2, 100]) == 1.5  # cut 1 each end
    assert report.iqm([7.0]) == 7.0 and report.iqm([1.0, 3.0]) == 2.0  # n < 4 cuts nothing
    assert report.iqm(np.array([[1, 2, 3, 4], [5, 6, 7, 80]])).tolist() == [2.5, 6.5]  # along the last axis


def test_stratified_bootstrap_interval():
    rng = np.random.default_rng(1)
    few = [rng.normal(g, 1.0, size=3) for g in range(5)]  # 5 games x 3 seeds
    low, high = report.stratified_bootstrap(few)
    point = report.iqm(np.concatenate(few))
    assert low < point < high
    assert report.stratified_bootstrap(few) == (low, high)  # fixed seed: the same interval every time
    many = [rng.normal(g, 1.0, size=30) for g in range(5)]  # 10x the seeds: a narrower interval
    m_low, m_high = report.stratified_bootstrap(many)
    assert m_high - m_low < high - low
    # runs that agree, or one run per game: every resample is the data, the interval one point
    assert report.stratified_bootstrap([np.full(3, 0.5), np.full(3, 2.0)]) == (pytest.approx(1.25),) * 2
    assert report.stratified_bootstrap([[0.1], [0.7], [2.0]]) == (pytest.approx(2.8 / 3),) * 2  # n 3 cuts nothing
    # resampling stays within each game: with games 0 and 100 the IQM of (2 runs of each) is always 50
    assert report.stratified_bootstrap([[0.0, 0.0], [100.0, 100.0]]) == (50.0, 50.0)


def test_aggregate_median_of_game_means():
    a = report.aggregate({"Pong": [0.0, 1.0], "Breakout": [2.0, 4.0], "Qbert": [10.0, 10.0]})
    assert (a["games"], a["runs"]) == (3, 6)
    assert a["median"] == 3.0  # game means 0.5, 3, 10
    assert a["iqm"] == pytest.approx(np.mean([1.0, 2.0, 4.0, 10.0]))  # sorted 0 1 2 4 10 10, cut 1 each end
    assert a["ci"][0] <= a["iqm"] <= a["ci"][1]


def test_names_and_budgets():
    games = list(report.load_reference())
    assert report.game_from_env_id("BreakoutNoFrameskip-v4", games) == "Breakout"
    assert report.game_from_env_id("ALE/BeamRider-v5", games) == "BeamRider"
    assert report.game_from_env_id("beam_rider", games) == "BeamRider"
    assert [report.budget_label(n) for n in (10_000_000, 2_500_000, 64, 50_000)] == ["10M", "2.5M", "64", "50k"]


def test_curve_style_tells_budgets_and_peers_apart():
    panel = [("ppo", 2_000_000, ""), ("ppo", 10_000_000, ""), ("a2c", 2_000_000, ""), ("a2c", 2_000_000, "SB3")]
    full, paler = report.curve_style("ppo", 10_000_000, "", panel), report.curve_style("ppo", 2_000_000, "", panel)
    assert full == (matplotlib.colors.to_rgb(report.COLORS["ppo"]), "-")
    assert paler[1] == "-" and all(p > f for p, f in zip(paler[0], full[0]))  # the same hue, nearer white
    assert paler[0] == pytest.approx(tuple(0.45 * c + 0.55 for c in full[0]))
    # a2c's one budget keeps its colour; the peer's run of it is dashed in that colour
    ours, peer = report.curve_style("a2c", 2_000_000, "", panel), report.curve_style("a2c", 2_000_000, "SB3", panel)
    assert ours[0] == peer[0] == matplotlib.colors.to_rgb(report.COLORS["a2c"]) and (ours[1], peer[1]) == ("-", "--")
    # a preset's run of the same algorithm and budget: the same colour, dash-dotted
    assert report.curve_style("a2c", 2_000_000, "", panel, "fast") == (ours[0], "-.")


def test_a_preset_run_stands_apart_from_the_defaults(resumed_run, tmp_path):
    """The same run extracted as it is (the defaults) and as a run at --preset fast: two summaries, two rows,
    two rows in the time-to-score table, each named for what it ran."""
    assert report.preset_of({"preset": "cleanrl"}) is None and report.preset_of({"seed": 1}) is None
    assert report.preset_of(None) is None and report.preset_of({"preset": "nature"}) == "nature"
    summaries = tmp_path / "summaries"
    assert report.extract(resumed_run, summaries, [], [], None, False).name == "Breakout__ppo__1__120.csv"
    record = json.loads((resumed_run / "run.json").read_text())
    record["settings"].update(preset="fast", end_e=0.001)  # as if PPO had an epsilon-greedy training policy
    (resumed_run / "run.json").write_text(json.dumps(record))
    assert report.extract(resumed_run, summaries, [], [], None, False).name == "Breakout__ppo__1__120__fast.csv"
    loaded = report.load_summaries(summaries)
    results = [report.run_result(meta, scalars) for meta, scalars in loaded]
    rows = report.table_rows(results, [], {})
    assert [row[0] for row in rows] == ["ppo", "ppo --preset fast"]
    assert "summaries/Breakout__ppo__1__120__fast.json" in rows[1][3]
    assert "training epsilon 0.001" in rows[1][-1] and "epsilon" not in rows[0][-1]  # what its scores count
    assert [row[0] for row in report.aggregate_rows(results, {"Breakout": (1.7, 30.5)})] == ["ppo", "ppo --preset fast"]
    ((game, header, time_rows),) = report.score_time_tables(loaded, {"Breakout": [5.0]}, links=False)
    assert [(row[0], row[2]) for row in time_rows] == [("ppo", "Breakout__ppo__1__120"),
                                                        ("ppo --preset fast", "Breakout__ppo__1__120__fast")]
    # a summary extracted before summaries named their preset: its settings still tell
    old = summaries / "Breakout__ppo__1__120__fast.json"
    meta = json.loads(old.read_text())
    del meta["preset"]
    old.write_text(json.dumps(meta))
    assert {m.get("preset") for m, _ in report.load_summaries(summaries)} == {None, "fast"}


def test_table_rows_beside_published_scores():
    results = [dict(name=f"Breakout__ppo__{s}__10M", algorithm="ppo", game="Breakout", seed=s, budget=10_000_000,
                    agent_steps=10_000_000, finished=True, final_score=score, games=5000, last_eval=ev,
                    wall_clock_h=h, steps_per_s=sps)
               for s, score, ev, h, sps in ((1, 20.0, 10.0, 2.0, 1000.0), (2, 40.0, None, 4.0, 500.0))]
    baselines = [dict(algorithm="ppo", system="CleanRL", game="Breakout", agent_steps=10_000_000, score=414.66,
                      protocol="last 100", source="docs"),
                 dict(algorithm="dqn", system="CleanRL", game="Breakout", agent_steps=10_000_000, score=1.0,
                      protocol="x", source="y")]
    rows = report.table_rows(results, baselines, {"Breakout": (1.7, 30.5)})
    assert rows == [
        ["ppo", "Breakout", "10M", "this repository, seeds [1](summaries/Breakout__ppo__1__10M.json), "
         "[2](summaries/Breakout__ppo__2__10M.json)", "30.0 ± 10.0", "10.0", "0.98", "750", "3.0 h",
         "mean of the last 100 training games, mean ± std over 2 seeds, NoFrameskip-v4, no sticky actions"],
        ["ppo", "Breakout", "10M", "CleanRL", "414.7", "-", "14.34", "-", "-", "last 100 (docs)"],
    ]  # HNS (30 - 1.7) / 28.8 = 0.98; (414.66 - 1.7) / 28.8 = 14.34; the DQN row is another algorithm's
    aggregate = report.aggregate_rows(results, {"Breakout": (1.7, 30.5)})
    assert aggregate[0][:4] == ["ppo", "10M", "1", "2"]
    assert aggregate[0][5] == "0.98"


def test_published_baselines_resolve_same_protocol():
    rows = report.load_baselines()
    pong = next(r for r in rows if r["system"] == "CleanRL ppo_atari.py" and r["game"] == "Pong")
    assert pong["protocol"].startswith("mean of last 100 training episodes") and pong["agent_steps"] == 10_000_000
    assert all(r["protocol"] != "same" for r in rows)


def test_page_from_summaries_alone_keeps_the_hand_written_block(resumed_run, tmp_path):
    summaries, figures, readme = tmp_path / "summaries", tmp_path / "figures", tmp_path / "README.md"
    assert report.main(["--extract", str(resumed_run.parent), "--summaries", str(summaries)]) == 0  # a runs root
    shutil.rmtree(resumed_run.parent)  # from here on, the summaries alone
    args = ["--summaries", str(summaries), "--figures", str(figures), "--readme", str(readme)]
    assert report.main(args) == 0
    page = readme.read_text()
    assert (figures / "curves_steps.png").stat().st_size > 0 and (figures / "curves_hours.png").stat().st_size > 0
    # score: the mean of the 9 games left (fewer than 100), 51 / 9 = 5.67; evaluation (3 + 4 + 8) / 3 = 5;
    # HNS (5.67 - 1.7) / 28.8 = 0.14; 120 agent steps in 49 + 70 s of training: 1 step/s
    assert ("| ppo | Breakout | 120 | this repository, seed [1](summaries/Breakout__ppo__1__120.json) "
            "| 5.7 | 5.0 | 0.14 | 1 | 0.0 h |") in page
    assert "python ppo_atari.py --resume runs/Breakout__ppo__1 --total-timesteps 120" in page
    assert "9 training games, fewer than 100: no mean of 100 yet" in page  # its time to a score: none yet
    edited = page.replace("(Hand-written: measured", "We measured 1,234 agent steps/s.\n(Hand-written: measured")
    readme.write_text(edited)
    assert report.main(args) == 0
    assert readme.read_text() == edited  # regenerating changes nothing else, and keeps the hand-written lines
    readme.write_text("# a page someone wrote by hand\n")
    assert report.main(args) == 2  # no markers: refused, not overwritten
    assert readme.read_text() == "# a page someone wrote by hand\n"


def test_unfinished_runs_are_left_out_unless_asked(resumed_run, tmp_path):
    (resumed_run / "ppo_atari.model").unlink()
    assert report.extract(resumed_run, tmp_path / "s", [], [], None, False) is None
    path = report.extract(resumed_run, tmp_path / "s", [], [], None, True)
    assert json.loads(path.with_suffix(".json").read_text())["finished"] is False


def test_mistakes_end_in_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "benchmark/report.py", "--extract", str(tmp_path / "missing")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: run directory")
    result = subprocess.run([sys.executable, "benchmark/report.py", "--summaries", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: no summaries")
    assert "Traceback" not in result.stderr


def write_peer_run(directory, finished=True):
    """A Stable-Baselines3 A2C run on Breakout as `sb3_speed.py --scores` leaves it: 5 games, 400 agent steps
    in 80 s, and, once learning has ended, the record beside the scores."""
    directory.mkdir(parents=True, exist_ok=True)
    scores = directory / "scores.csv"
    scores.write_text("agent_step,score,length_frames,seconds\n"
                      + "".join(f"{80 * i},{i}.0,700,{16.0 * i}\n" for i in range(1, 6)))
    if finished:
        scores.with_suffix(".json").write_text(json.dumps(dict(
            algo="a2c", steps=400, window_steps=320, window_seconds=70.0, sps=4.6, sps_whole=5.0, seconds=80.0,
            env_id="BreakoutNoFrameskip-v4", seed=1, system="Stable-Baselines3 2.9.2")) + "\n")
    return scores


def test_peer_run_stands_beside_ours_under_its_name(resumed_run, tmp_path):
    summaries, figures, readme = tmp_path / "summaries", tmp_path / "figures", tmp_path / "README.md"
    scores = write_peer_run(tmp_path / "sb3_a2c")
    assert report.main(["--extract-peer", str(scores), "--summaries", str(summaries),
                        "--command", "python benchmark/sb3_speed.py --algo a2c --steps 400"]) == 0
    meta = json.loads((summaries / "Breakout__a2c__1__400__sb3.json").read_text())
    assert (meta["algorithm"], meta["game"], meta["seed"], meta["agent_steps"]) == ("a2c", "Breakout", 1, 400)
    assert meta["system"] == "Stable-Baselines3 2.9.2" and meta["wall_clock_s"] == 80.0 and meta["finished"]
    assert meta["source"] == "scores.csv"  # outside the repository: the name only
    rows = read_csv(summaries / "Breakout__a2c__1__400__sb3.csv")
    assert [(int(r["step"]), float(r["value"])) for r in rows] == [(80 * i, float(i)) for i in range(1, 6)]

    # An A2C run of ours on the same game and budget, to stand beside it: the resumed PPO run, relabelled
    report.extract(resumed_run, summaries, list(report.load_reference()), [], None, False)
    ours = json.loads((summaries / "Breakout__ppo__1__120.json").read_text())
    ours.update(name="Breakout__a2c__1__400", algorithm="a2c", total_timesteps=400)
    (summaries / "Breakout__a2c__1__400.json").write_text(json.dumps(ours))
    shutil.move(summaries / "Breakout__ppo__1__120.csv", summaries / "Breakout__a2c__1__400.csv")
    (summaries / "Breakout__ppo__1__120.json").unlink()
    assert report.main(["--summaries", str(summaries), "--figures", str(figures), "--readme", str(readme)]) == 0
    page = readme.read_text()
    table = [line for line in page.splitlines() if line.startswith("| a2c | Breakout |")]
    # ours first, the peer's next (score (1+2+3+4+5)/5 = 3, 400 steps in 80 s = 5/s), the published rows once, last
    assert table[0].startswith("| a2c | Breakout | 400 | this repository, seed [1](summaries/Breakout__a2c__1__400.json)")
    assert table[1].startswith("| a2c | Breakout | 400 | Stable-Baselines3 2.9.2, run here, seed "
                               "[1](summaries/Breakout__a2c__1__400__sb3.json) | 3.0 | - | 0.05 | 5 | 0.0 h |")
    assert "Stable-Baselines3 2.9.2's own Atari wrappers" in table[1]
    assert all("run here" not in row and "this repository" not in row for row in table[2:]) and len(table) > 2
    assert "| a2c (Stable-Baselines3 2.9.2) | 400 | 1 | 1 |" in page  # its own aggregate, apart from ours
    assert "### Breakout, a2c (Stable-Baselines3 2.9.2, run here), seed 1, 400 agent steps" in page
    assert "python benchmark/sb3_speed.py --algo a2c --steps 400" in page


def test_unfinished_peer_run_is_refused_in_one_line(tmp_path):
    scores = write_peer_run(tmp_path / "sb3_a2c", finished=False)
    result = subprocess.run([sys.executable, "benchmark/report.py", "--extract-peer", str(scores),
                             "--summaries", str(tmp_path / "s")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "has not finished" in result.stderr and not (tmp_path / "s").exists()


def test_a_time_limited_peer_run_keeps_the_budget_of_its_schedules(tmp_path):
    """sb3_speed.py --minutes: 400 agent steps played of a 10M budget. An older record, without budget, is
    the test above: its steps are its budget."""
    scores = write_peer_run(tmp_path / "sb3_a2c")
    record = json.loads(scores.with_suffix(".json").read_text())
    scores.with_suffix(".json").write_text(json.dumps(dict(record, budget=10_000_000, minutes=60.0)))
    path = report.extract_peer(scores, tmp_path / "s", list(report.load_reference()), [], None)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert path.name == "Breakout__a2c__1__10M__sb3__60min.csv"
    assert (meta["total_timesteps"], meta["agent_steps"], meta["minutes"]) == (10_000_000, 400, 60.0)
    assert meta["segments"] == [{"first_step": 0, "last_step": 400, "start_time": 0.0, "end_time": 80.0}]
    rows = report.table_rows([report.run_result(meta, report.load_summaries(tmp_path / "s")[0][1])], [], {})
    assert rows[0][2] == "10M" and "(stopped after 60 minutes at 400 agent steps)" in rows[0][3]


def write_cleanrl_run(run_dir, games, record=True):
    """A run directory as benchmark/cleanrl_run.py leaves it: CleanRL's events, written by torch's SummaryWriter
    into the directory itself, and the record. `games`: (agent step, score, seconds since the writer's
    creation) of each training game; the SPS is logged at each game's step too. Returns the creation time."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True)
    created = time.time()
    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n|env_id|PongNoFrameskip-v4|\n|seed|1|")
    for step, score, seconds in games:
        writer.add_scalar("charts/episodic_return", score, step, walltime=created + seconds)
        writer.add_scalar("charts/episodic_length", 3000, step, walltime=created + seconds)
        writer.add_scalar("charts/SPS", 500, step, walltime=created + seconds)
    writer.close()
    if record:
        (run_dir / "cleanrl_run.json").write_text(json.dumps(dict(
            algo="ppo", env_id="PongNoFrameskip-v4", seed=1, steps=games[-1][0], budget=10_000_000, minutes=60.0,
            seconds=games[-1][2] + 2, stopped="time limit", finished=True, system="CleanRL fe8d8a0",
            command="python benchmark/cleanrl_run.py ppo_atari.py --cleanrl $CLEANRL --minutes 60 --out run "
                    "-- --env-id PongNoFrameskip-v4", settings={"env_id": "PongNoFrameskip-v4", "seed": "1"})))
    return created


def test_cleanrl_run_directory_stands_beside_ours(tmp_path):
    """CleanRL's PPO on Pong stopped at 60 minutes: 150 games, game i (from 1) at agent step 32i and i seconds
    after the writer's creation, scoring -21 for the first 50 games and 21 after. The mean of the last 100 at
    game i >= 100 is 21(2i - 200)/100: >= 0 at game 100, >= 18 at game 143, >= 20 at game 148."""
    run_dir = tmp_path / "cleanrl_ppo_pong_60min"
    games = [(32 * i, -21.0 if i <= 50 else 21.0, float(i)) for i in range(1, 151)]
    write_cleanrl_run(run_dir, games)
    summaries, readme = tmp_path / "summaries", tmp_path / "README.md"
    assert report.main(["--extract-peer", str(run_dir), "--summaries", str(summaries)]) == 0
    meta = json.loads((summaries / "Pong__ppo__1__10M__cleanrl__60min.json").read_text())
    assert (meta["algorithm"], meta["game"], meta["seed"], meta["total_timesteps"], meta["agent_steps"]) == \
        ("ppo", "Pong", 1, 10_000_000, 4800)
    assert meta["system"] == "CleanRL fe8d8a0" and meta["finished"] and meta["minutes"] == 60.0
    assert meta["commands"] == [json.loads((run_dir / "cleanrl_run.json").read_text())["command"]]
    assert meta["settings"] == {"env_id": "PongNoFrameskip-v4", "seed": "1"} and meta["source"] == run_dir.name
    # timed from the events' first record (the writer's creation) to the last game, 150 s after it
    (events,) = run_dir.glob("events.out.tfevents.*")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    header = next(iter(EventFileLoader(str(events)).Load())).wall_time
    (segment,) = meta["segments"]
    assert (segment["first_step"], segment["last_step"], segment["start_time"]) == (0, 4800, header)
    assert meta["wall_clock_s"] == pytest.approx(150.0, abs=0.2)
    rows = read_csv(summaries / "Pong__ppo__1__10M__cleanrl__60min.csv")
    assert [(int(r["step"]), float(r["value"])) for r in rows if r["tag"] == "charts/episodic_return"] == \
        [(step, score) for step, score, _ in games]
    assert {r["tag"] for r in rows} == {"charts/episodic_return", "charts/SPS"}

    assert report.main(["--summaries", str(summaries), "--figures", str(tmp_path / "figures"),
                        "--readme", str(readme)]) == 0
    page = readme.read_text()
    assert ("| ppo | Pong | 10M | CleanRL fe8d8a0, run here, seed [1](summaries/Pong__ppo__1__10M__cleanrl__60min.json) "
            "(stopped after 60 minutes at 4,800 agent steps) | 21.0 |") in page  # the last 100 games: 51-150
    cells = next(line for line in page.splitlines() if line.startswith("| ppo | 10M | [Pong__ppo__1__10M__cleanrl__60min]"))
    # >= 0 at game 100 (step 3,200, 100 s: 1.7 minutes), >= 18 at game 143, >= 20 at game 148
    assert "| 3,200 | 1.7 | 4,576 | 2.4 | 4,736 | 2.5 |" in cells
    assert "(CleanRL fe8d8a0, run here)" in cells
    assert (tmp_path / "figures" / "curves_hours.png").stat().st_size > 0


def test_peer_run_directory_mistakes_end_in_one_line_and_exit_2(tmp_path, capsys):
    no_record = tmp_path / "no_record"
    write_cleanrl_run(no_record, [(32, -21.0, 1.0)], record=False)
    no_events = tmp_path / "no_events"
    no_events.mkdir()
    (no_events / "cleanrl_run.json").write_text("{}")
    for run_dir, says in ((no_record, "has no cleanrl_run.json"), (no_events, "has no TensorBoard events files")):
        assert report.main(["--extract-peer", str(run_dir), "--summaries", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and says in err
    assert not (tmp_path / "s").exists()
    # a CleanRL run given to --extract: told where it belongs
    write_cleanrl_run(tmp_path / "cleanrl_run", [(32, -21.0, 1.0)])
    assert report.main(["--extract", str(tmp_path / "cleanrl_run"), "--summaries", str(tmp_path / "s")]) == 2
    assert "--extract-peer" in capsys.readouterr().err


def test_training_seconds_leave_out_the_pause_between_processes():
    # process 1: steps 0-100 from T0 to T0+100; an hour's pause; process 2: steps 101-200 from T0+3700
    segments = [{"first_step": 0, "last_step": 100, "start_time": T0, "end_time": T0 + 100},
                {"first_step": 101, "last_step": 200, "start_time": T0 + 3700, "end_time": T0 + 3800}]
    seconds = report.training_seconds(np.array([0, 50, 100, 101, 150, 200]),
                                      np.array([T0, T0 + 50, T0 + 100, T0 + 3700, T0 + 3750, T0 + 3800]), segments)
    assert seconds.tolist() == [0, 50, 100, 100, 150, 200]  # not 3750 and 3800: the pause does not count


def test_time_to_threshold_is_the_first_crossing_of_the_mean_of_the_last_games():
    scores = np.array([0, 0, 9, 9, 0, 0, 0, 9, 9, 9])
    steps, seconds = 100 * np.arange(1, 11), 60.0 * np.arange(10)  # game i ends at step 100(i+1), minute i
    # means of the last 3 from the 3rd game on: 3, 6, 6, 3, 0, 3, 6, 9
    assert report.time_to_threshold(steps, seconds, scores, 6, window=3) == (400, 3.0)  # the first, not game 9
    assert report.time_to_threshold(steps, seconds, scores, 9, window=3) == (1000, 9.0)
    assert report.time_to_threshold(steps, seconds, scores, 3, window=3) == (300, 2.0)
    assert report.time_to_threshold(steps, seconds, scores, 9.5, window=3) is None  # never reached: "-"
    assert report.time_to_threshold(steps, None, scores, 6, window=3) == (400, None)  # no timing: steps only
    # counted from the 100th game on (window 100, the default): 99 games of 50 are not yet a score of 50
    many = np.full(150, 50.0)
    assert report.time_to_threshold(np.arange(99), np.arange(99.0), many[:99], 50) is None
    assert report.time_to_threshold(np.arange(150), 60.0 * np.arange(150), many, 50) == (99, 99.0)


def test_score_thresholds_are_reference_data():
    thresholds = report.load_thresholds()
    assert {18.0, 20.0} <= set(thresholds["Pong"]) and {50.0, 100.0} <= set(thresholds["Breakout"])
    assert all(values == sorted(values) for values in thresholds.values())
    with open(os.path.join(ROOT, "benchmark", "reference", "score_thresholds.csv"), newline="") as f:
        assert all(row["why"].strip() for row in csv.DictReader(f))  # each threshold says why it is there


def made_up_summary(summaries, name, game, scores, steps, wall_times, segments):
    """A summary as --extract writes it, of a PPO run with these training games and process segments (None:
    a summary extracted before segments were recorded)."""
    meta = dict(name=name, algorithm="ppo", game=game, seed=int(name.split("__")[2]), total_timesteps=int(steps[-1]),
                env_id=f"{game}NoFrameskip-v4", list=None, commands=[], commits=[], finished=True, settings=None,
                agent_steps=int(steps[-1]), wall_clock_s=float(wall_times[-1] - wall_times[0]), source=name)
    if segments is not None:
        meta["segments"] = segments
    scalars = {report.TRAIN: (np.asarray(steps), np.asarray(wall_times, dtype=np.float64),
                              np.asarray(scores, dtype=np.float64))}
    report.write_summary(summaries, meta, scalars)


def test_time_to_a_score_table_from_made_up_summaries(tmp_path, capsys, monkeypatch):
    """Pong, resumed after an hour's pause: 300 games, game k (from 0) at step 1000(k+1), 10 s apart, scoring
    0 for the first 200 games and 20 after. Process 1 logs games 0-149 from T0+10 to T0+1500; process 2,
    an hour later, games 150-299 from T0+5110 to T0+6600. Mean of the last 100 at game k >= 200:
    20(k-199)/100. Breakout: a run that never reaches 50, and one extracted before segments were recorded."""
    monkeypatch.setattr(report, "load_thresholds", lambda: {"Pong": [0.0, 18.0, 20.0], "Breakout": [50.0]})
    summaries = tmp_path / "summaries"
    k = np.arange(300)
    wall = np.where(k < 150, T0 + 10 * (k + 1), T0 + 5100 + 10 * (k - 149))
    segments = [{"first_step": 0, "last_step": 150_000, "start_time": T0 + 10, "end_time": T0 + 1500},
                {"first_step": 150_001, "last_step": 300_000, "start_time": T0 + 5110, "end_time": T0 + 6600}]
    made_up_summary(summaries, "Pong__ppo__1__300k", "Pong", np.where(k < 200, 0.0, 20.0), 1000 * (k + 1), wall,
                    segments)
    breakout_wall = T0 + 10 * np.arange(150)
    one = [{"first_step": 0, "last_step": 150, "start_time": T0, "end_time": breakout_wall[-1]}]
    made_up_summary(summaries, "Breakout__ppo__1__150", "Breakout", np.full(150, 49.9), np.arange(1, 151),
                    breakout_wall, one)
    made_up_summary(summaries, "Breakout__ppo__2__150", "Breakout", np.full(150, 60.0), np.arange(1, 151),
                    breakout_wall, None)
    readme = tmp_path / "README.md"
    assert report.main(["--summaries", str(summaries), "--figures", str(tmp_path / "figures"),
                        "--readme", str(readme)]) == 0
    tables = {game: (header, rows) for game, header, rows in report.score_time_tables(report.load_summaries(summaries),
                                                                                    report.load_thresholds())}
    header, rows = tables["Pong"]
    assert header[:4] == ["algorithm", "budget", "run", "best mean of 100"]
    cells = dict(zip(header, rows[0]))
    assert cells["best mean of 100"] == "20.0"
    # >= 0 at the 100th game (the means of games 1-99, also 0, do not count): step 100,000, 1000 - 10 s
    assert (cells["≥ 0 agent steps"], cells["≥ 0 minutes"]) == ("100,000", "16.5")
    # >= 18 at game 289, step 290,000, in process 2: 1490 s of process 1 + (T0+5100+1400) - (T0+5110) = 2880 s,
    # 48 minutes; counting the pause would say (T0+6500 - (T0+10)) / 60 = 108.2
    assert (cells["≥ 18 agent steps"], cells["≥ 18 minutes"]) == ("290,000", "48.0")
    assert (cells["≥ 20 agent steps"], cells["≥ 20 minutes"]) == ("300,000", "49.7")  # 2980 s
    header, rows = tables["Breakout"]
    never, old = (dict(zip(header, row)) for row in rows)
    assert never["best mean of 100"] == "49.9" and never["≥ 50 agent steps"] == never["≥ 50 minutes"] == "-"
    assert never["note"] == ""
    # no segments: the steps are known (the 100th game, at step 100), the minutes not, and the note says why
    assert (old["≥ 50 agent steps"], old["≥ 50 minutes"]) == ("100", "-") and "extract it again" in old["note"]

    printed = capsys.readouterr().out
    assert "Pong__ppo__1__300k" in printed and "290,000" in printed and "48.0" in printed
    page = readme.read_text()
    assert "## Time to a score" in page
    assert ("| ppo | 300k | [Pong__ppo__1__300k](summaries/Pong__ppo__1__300k.json) | 20.0 | 100,000 | 16.5 "
            "| 290,000 | 48.0 | 300,000 | 49.7 |") in page
    assert (tmp_path / "figures" / "curves_hours.png").stat().st_size > 0  # the run without segments left out
