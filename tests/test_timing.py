"""benchmark/timing.py: a timed run's flags, its logged points read back from real TensorBoard events, and
its figures over the window after warm-up, on hand-made numbers. Nothing here is timed."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmark"))

import timing  # noqa: E402


def test_only_dqn_adds_flags_to_a_timed_run():
    dqn = ["--learning-starts", "1000", "--buffer-size", "100000"]
    assert timing.workload_flags("dqn") == timing.workload_flags("/any/where/dqn_atari.py") == dqn
    assert timing.workload_flags("ppo") == timing.workload_flags("a2c_atari.py") == []
    timing.workload_flags("dqn").append("--x")  # each caller gets its own list
    assert timing.DQN_FLAGS == dqn


def point(step, wall, sps=None, **phases):
    return timing.Point(step, wall, sps, phases)


def test_loop_figures_over_the_window_after_warmup():
    points = [point(1024, 10.0, 102, env=2.0, inference=1.0, update=3.0, eval=0.0),
              point(2048, 14.0, 146, env=3.0, inference=1.5, update=5.0, eval=0.0),
              point(3072, 18.0, 171, env=4.0, inference=2.0, update=7.0, eval=0.0)]
    figures = timing.loop_figures(points, warmup=1024)
    assert figures["window"] == (1024, 3072)
    assert figures["sps"] == pytest.approx(2048 / 8.0)
    assert figures["sps_whole"] == 171
    # per 1,024 agent steps: env 2 s over 2,048 steps = 1.0; other = 4.0 s per 1,024 - the phases
    assert figures["phases"] == pytest.approx({"env": 1.0, "inference": 0.5, "update": 2.0, "other": 0.5})
    later = timing.loop_figures(points, warmup=1500)
    assert later["window"] == (2048, 3072) and later["sps"] == pytest.approx(256)
    assert timing.loop_figures(points, warmup=3000) is None  # one point left: no window
    # a peer's points carry no phases
    assert timing.loop_figures([point(1000, 0.0, 90), point(3000, 10.0, 120)], 1000) == \
        dict(sps=200.0, sps_whole=120, phases={}, window=(1000, 3000))


def test_points_read_back_from_a_runs_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    assert timing.read_points(tmp_path) == []  # no events yet
    run = tmp_path / "runs" / "r0"
    writer = SummaryWriter(str(run))
    writer.add_scalar("losses/value_loss", 0.5, 100)  # other tags are ignored
    for step, sps, env in ((100, 50.0, 1.0), (200, 60.0, 2.5), (300, 70.0, 4.0)):
        writer.add_scalar("charts/SPS", sps, step)
        writer.add_scalar("time/env", env, step)
        if step > 100:  # a phase logged from the second point on
            writer.add_scalar("time/update", step / 100, step)
    writer.close()

    points = timing.read_points(tmp_path)  # found anywhere under the folder given
    assert [(p.step, p.reported_sps, p.phases) for p in points] == [
        (100, 50.0, {"env": 1.0}), (200, 60.0, {"env": 2.5, "update": 2.0}), (300, 70.0, {"env": 4.0, "update": 3.0})]
    assert points[0].wall_time <= points[1].wall_time <= points[2].wall_time


@pytest.mark.slow
def test_time_script_reads_a_real_run_after_its_first_third():
    figures = timing.time_script("ppo", ["--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
                                         "--update-epochs", "1", "--torch-threads", "1", "--env-threads", "1"], 640)
    assert figures["window"] == (256, 640)  # the first logged point at or after 640 // 3, to the last
    assert figures["sps"] > 0 and {"env", "inference", "update", "other"} <= set(figures["phases"])
