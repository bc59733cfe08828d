"""benchmark/cleanrl_run.py: a CleanRL script stopped at its time limit, with its events whole and its record.

CleanRL itself needs its own venv (gymnasium 0.29.1), so the script run here is a stand-in in a made-up
checkout: it parses CleanRL's flags, logs CleanRL's hyperparameters text and, every 8 agent steps, a game
and the SPS through torch's SummaryWriter, as ppo_atari.py does. It runs in this Python, through the same
runner (`--python`), which stops it by the real mechanism."""

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmark"))

import cleanrl_run  # noqa: E402

STAND_IN = '''"""A stand-in for CleanRL's ppo_atari.py: its flags, its hyperparameters text, and every 8 agent steps
(10 ms apart) a game and the SPS, logged as CleanRL logs them."""
import argparse
import time

from torch.utils.tensorboard import SummaryWriter

import cleanrl_utils  # noqa: F401  (the checkout is on the path, as CleanRL's scripts need)

parser = argparse.ArgumentParser()
parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--total-timesteps", type=int, default=10_000_000)
args = parser.parse_args()
writer = SummaryWriter(f"runs/{args.env_id}__stand_in__{args.seed}")
table = "\\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
writer.add_text("hyperparameters", "|param|value|\\n|-|-|\\n%s" % table)
for global_step in range(8, args.total_timesteps + 1, 8):
    time.sleep(0.01)
    writer.add_scalar("charts/episodic_return", global_step % 21, global_step)
    writer.add_scalar("charts/SPS", 800, global_step)
writer.close()
'''


@pytest.fixture
def checkout(tmp_path):
    """A made-up CleanRL checkout: cleanrl/ppo_atari.py (the stand-in) and cleanrl_utils/."""
    (tmp_path / "cleanrl" / "cleanrl").mkdir(parents=True)
    (tmp_path / "cleanrl" / "cleanrl_utils").mkdir()
    (tmp_path / "cleanrl" / "cleanrl_utils" / "__init__.py").write_text("")
    (tmp_path / "cleanrl" / "cleanrl" / "ppo_atari.py").write_text(STAND_IN)
    return tmp_path / "cleanrl"


def test_settings_from_cleanrl_hyperparameters_text():
    text = "|param|value|\n|-|-|\n|exp_name|ppo_atari|\n|total_timesteps|10000000|\n|target_kl|None|"
    assert cleanrl_run.settings_from_text(text) == {"exp_name": "ppo_atari", "total_timesteps": "10000000",
                                                    "target_kl": "None"}


@pytest.mark.slow
def test_the_script_stops_at_the_time_limit_with_every_step_on_disk(checkout, tmp_path):
    """0.05 minutes (3 s) of a stand-in whose own budget, 24,000 agent steps, would take 30 s: the run must
    stop at the limit, every logged step in the events (the writer closed at the stop), the record beside."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = tmp_path / "run"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "benchmark/cleanrl_run.py", "ppo_atari.py", "--cleanrl", str(checkout),
                             "--python", sys.executable, "--minutes", "0.05", "--out", str(out), "--",
                             "--env-id", "PongNoFrameskip-v4", "--total-timesteps", "24000"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr + (out / cleanrl_run.LOG).read_text()
    assert took < 25, f"not stopped at the limit: {took:.0f} s"
    record = json.loads((out / cleanrl_run.RECORD).read_text())
    assert record["stopped"] == "time limit" and record["finished"] is True
    assert 3.0 <= record["seconds"] < 6.0  # from the writer's creation to the first new step after 3 s
    assert (record["algo"], record["env_id"], record["seed"], record["budget"], record["minutes"]) == \
        ("ppo", "PongNoFrameskip-v4", 1, 24_000, 0.05)
    assert record["system"] == "CleanRL fe8d8a0"  # a checkout without git history: the pinned commit
    assert record["command"] == ("python benchmark/cleanrl_run.py ppo_atari.py --cleanrl $CLEANRL --python "
                                 "$CLEANRL_PYTHON --minutes 0.05 --out run -- --env-id PongNoFrameskip-v4 "
                                 "--total-timesteps 24000")
    assert record["settings"]["total_timesteps"] == "24000"

    (events,) = out.glob("events.out.tfevents.*")  # in the run directory itself, not under CleanRL's runs/
    assert not (out / "runs").exists()
    accumulator = EventAccumulator(str(out), size_guidance={"scalars": 0}).Reload()
    games, sps = accumulator.Scalars("charts/episodic_return"), accumulator.Scalars("charts/SPS")
    steps = record["steps"]
    assert 0 < steps < 24_000
    # every step up to the stop, both tags of it: nothing lost at the stop, no step logged in half
    assert [e.step for e in games] == [e.step for e in sps] == list(range(8, steps + 1, 8))
    start = next(iter(EventFileLoader(str(events)).Load())).wall_time
    assert games[-1].wall_time - start >= 3.0 - 0.1  # the last points logged before the stop are on disk
    assert f"stopped at the time limit after {steps:,} agent steps" in result.stdout


def test_mistakes_end_in_one_line_and_exit_2(checkout, tmp_path, capsys):
    def error(*flags):
        assert cleanrl_run.main(["ppo_atari.py", *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ")
        return err

    (tmp_path / "taken").mkdir()
    base = ["--cleanrl", str(checkout), "--python", sys.executable, "--minutes", "1"]
    assert "exists" in error(*base, "--out", str(tmp_path / "taken"))
    assert "above 0" in error("--cleanrl", str(checkout), "--minutes", "0", "--out", str(tmp_path / "new"))
    assert "cleanrl_utils" in error("--cleanrl", str(tmp_path), "--minutes", "1", "--out", str(tmp_path / "new"))
    assert "not an executable" in error("--cleanrl", str(checkout), "--python", str(tmp_path / "nothing"),
                                        "--minutes", "1", "--out", str(tmp_path / "new"))
    assert cleanrl_run.main(["dqn_atari.py", *base, "--out", str(tmp_path / "new")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse's own mistakes: one line too
        cleanrl_run.main(["ppo_atari.py", "--minutes", "1"])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_help_gives_the_command_of_a_run_and_its_summary(capsys):
    with pytest.raises(SystemExit) as exit_:
        cleanrl_run.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--minutes 60" in out
    assert "report.py --extract-peer runs/cleanrl_ppo_pong_60min" in out
