"""A learning run of one of CleanRL's own scripts, stopped after a given wall-clock, to stand beside ours.

A peer for benchmark/report.py, as benchmark/sb3_speed.py --scores is for Stable-Baselines3: it runs
`cleanrl/SCRIPT` of a CleanRL checkout (`--cleanrl DIR`, the folder holding cleanrl/ and cleanrl_utils/)
unchanged, in CleanRL's own Python (`--python`: a venv with the versions CleanRL pins, gymnasium 0.29.1; by
default the one benchmark/throughput.py builds, once, under the system's temporary folder), with CleanRL's
own flags after `--`. It imports nothing of this repository into CleanRL's process but this file, which
touches only CleanRL's TensorBoard writer (`torch.utils.tensorboard.SummaryWriter`, replaced by a subclass
before the script is run):

- its events go into the run directory `--out DIR` (which must not exist yet; CleanRL's own `runs/...`
  path is ignored), and anything else the script writes lands in DIR too (its working directory);
- it flushes every FLUSH_SECS seconds instead of CleanRL's 120, so that a process killed outright keeps
  all but its last seconds;
- the clock starts when the script creates it (after the imports, with the events' first record), and the
  first logging call for a new agent step after `--minutes M` ends the script there, before that call is
  logged: every agent step logged is logged whole. CleanRL's PPO logs at every game's end and after every
  update, so it stops within one update of the limit. The writer is then closed, which writes everything
  to disk.

The algorithm, its settings and its schedules are CleanRL's, untouched: the learning rate still anneals
over CleanRL's --total-timesteps (its budget; 10M agent steps by default), of which the run plays what M
minutes buy. When the script stops (at the limit, or at the end of its budget) this writes the record
RECORD into the run directory: algo, env_id, seed, budget (CleanRL's total_timesteps), steps (the agent
steps reached, the last logged), minutes, seconds (from the writer's creation to the stop), stopped, the
system ("CleanRL" and the checkout's commit; fe8d8a0, the commit whose pins the venv holds, when the
checkout has no git history), the command, and CleanRL's settings as its `hyperparameters` text logs them.
The record marks the run finished; Ctrl-C stops the run with its events kept and no record.
`report.py --extract-peer DIR` makes a summary of the run (its charts/episodic_return: whole games, raw
scores), so that it stands in the results table, the time to a score and the curves beside ours.

CleanRL's output goes to DIR/output.log. CleanRL's PPO on Pong for 60 minutes of its 10M agent steps,
alone on the machine (with $CLEANRL a checkout at fe8d8a0 and $CLEANRL_PYTHON its venv's python; in this
workplace ../shared/peers/setup.sh builds both under the temporary folder, as peers/cleanrl and
peers/cleanrl-venv/bin/python), then its summary:

    python benchmark/cleanrl_run.py ppo_atari.py --cleanrl $CLEANRL --python $CLEANRL_PYTHON --minutes 60 \
        --out runs/cleanrl_ppo_pong_60min -- --env-id PongNoFrameskip-v4 --seed 1
    python benchmark/report.py --extract-peer runs/cleanrl_ppo_pong_60min
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECORD = "cleanrl_run.json"  # in the run directory, written when the script stops: the run finished
LOG = "output.log"  # CleanRL's stdout and stderr, in the run directory
FLUSH_SECS = 10  # seconds between the writer's flushes to disk (torch's default, which CleanRL keeps: 120)
GRACE_S = 600  # seconds past the limit before a script that never stops (no logging call) is interrupted
# The child: this file, loaded by its path (so that nothing else of this repository is on CleanRL's
# sys.path), runs the script with `inside`.
CHILD = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('cleanrl_run', sys.argv[1]); "
         "module = sys.modules['cleanrl_run'] = importlib.util.module_from_spec(spec); "
         "spec.loader.exec_module(module); module.inside(sys.argv[2:])")


class UserError(Exception):
    """A mistake in the command line: main() prints it as one line and exits 2."""


class TimeLimit(BaseException):
    """Raised in the script's own loop at the time limit; a BaseException, so that no `except Exception`
    of the script's catches it."""


def settings_from_text(text: str) -> dict[str, str]:
    """CleanRL's `hyperparameters` text, a Markdown table "|param|value|\\n|-|-|\\n|seed|1|...", as a dict."""
    rows = [line.strip().strip("|").split("|", 1) for line in text.splitlines()[2:] if line.strip()]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def inside(argv: list[str]) -> None:
    """In CleanRL's Python: run the script as __main__ with its flags, its writer in the run directory and
    stopped at the time limit, then write the record. argv: the spec (JSON), the script, its flags."""
    spec, script, flags = json.loads(argv[0]), argv[1], argv[2:]
    out, limit = Path(spec["out"]), 60 * spec["minutes"]
    # CleanRL's scripts find the Atari ids once these two are imported, as in throughput.CLEANRL_RUNNER
    import ale_py  # noqa: F401
    import gymnasium  # noqa: F401
    import torch.utils.tensorboard

    state = dict(start=None, steps=None, settings=None)
    writers = []

    class Writer(torch.utils.tensorboard.SummaryWriter):
        """CleanRL's writer, into the run directory, flushed every FLUSH_SECS, stopped at the limit."""

        def __init__(self, log_dir=None, **kwargs):
            if state["start"] is not None:
                raise RuntimeError("the script made a second SummaryWriter: cleanrl_run.py keeps one run's events")
            super().__init__(str(out), **dict(kwargs, flush_secs=FLUSH_SECS))
            state["start"] = time.time()
            writers.append(self)

        def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
            new_step = global_step is not None and state["steps"] is not None and global_step > state["steps"]
            if new_step and time.time() - state["start"] >= limit:
                raise TimeLimit
            super().add_scalar(tag, scalar_value, global_step, *args, **kwargs)
            if global_step is not None:
                state["steps"] = max(state["steps"] or 0, int(global_step))

        def add_text(self, tag, text_string, *args, **kwargs):
            super().add_text(tag, text_string, *args, **kwargs)
            if tag == "hyperparameters":  # CleanRL logs every setting of its Args so, once, at the start
                state["settings"] = settings_from_text(text_string)

    torch.utils.tensorboard.SummaryWriter = Writer  # what the script's `from ... import SummaryWriter` gets
    sys.argv = [script, *flags]
    try:
        runpy.run_path(script, run_name="__main__")
        stopped, stop = "end of its budget", time.time()
    except TimeLimit:
        stopped, stop = "time limit", time.time()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the closing short
        print("stopped by SIGINT: the events are kept, no record written (the run did not finish)", flush=True)
        sys.exit(130)
    finally:
        for writer in writers:
            writer.close()  # writes every pending event to disk; a second close does nothing
    settings = state["settings"] or {}
    if state["start"] is None or not {"env_id", "seed", "total_timesteps"} <= set(settings):
        raise RuntimeError("the script logged no 'hyperparameters' text with env_id, seed and total_timesteps "
                           "through a SummaryWriter, as CleanRL's scripts do: no record written")
    record = dict(algo=spec["algo"], env_id=settings["env_id"], seed=int(settings["seed"]),
                  steps=state["steps"] or 0, budget=int(settings["total_timesteps"]), minutes=spec["minutes"],
                  seconds=round(stop - state["start"], 1), stopped=stopped, finished=True, system=spec["system"],
                  command=spec["command"], settings=settings)
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    print(f"stopped at the {stopped} after {record['steps']:,} agent steps in {record['seconds']:.0f} s", flush=True)


def cleanrl_commit(checkout: Path) -> str:
    """The checkout's commit, short, where it is the top of a git repository; else throughput.CLEANRL_COMMIT,
    the commit whose pins CleanRL's venv holds."""
    from throughput import CLEANRL_COMMIT

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)

    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != checkout.resolve():
        return CLEANRL_COMMIT  # a copy without its history, or a folder inside some other repository
    return git("rev-parse", "--short=7", "HEAD").stdout.strip()


def shown_command(opts: argparse.Namespace, flags: list[str]) -> str:
    """The command that made the run, as a summary may show it: no machine's directories (the checkout is
    $CLEANRL, its Python $CLEANRL_PYTHON, a run directory outside the repository by its name)."""
    out = opts.out.resolve()
    out = out.relative_to(REPO) if out.is_relative_to(REPO) else Path(out.name)
    placeholders = ["--cleanrl", "$CLEANRL"] + (["--python", "$CLEANRL_PYTHON"] if opts.python else [])
    return " ".join(["python benchmark/cleanrl_run.py", shlex.quote(opts.script), *placeholders,
                     "--minutes", f"{opts.minutes:g}", "--out", shlex.quote(str(out)), "--", *map(shlex.quote, flags)])


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other mistake
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(__doc__.split("\n")[1:]),
                    usage="%(prog)s SCRIPT --cleanrl DIR --minutes M --out DIR [--python PATH] [-- CLEANRL'S FLAGS]")
    parser.add_argument("script", help="CleanRL's script, in the checkout's cleanrl/ folder: ppo_atari.py, "
                                       "dqn_atari.py")
    parser.add_argument("--cleanrl", required=True, type=Path, metavar="DIR",
                        help="a CleanRL checkout: the folder holding cleanrl/ and cleanrl_utils/")
    parser.add_argument("--python", help="a Python with CleanRL's pinned packages (default: the venv benchmark/"
                                         "throughput.py builds under the temporary folder, built now if missing)")
    parser.add_argument("--minutes", required=True, type=float, help="wall-clock minutes before the script is stopped")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="the run directory, new: CleanRL's events, its output, the record")
    opts = parser.parse_args(ours)
    try:
        script = opts.cleanrl.resolve() / "cleanrl" / opts.script
        if not (opts.cleanrl / "cleanrl").is_dir() or not (opts.cleanrl / "cleanrl_utils").is_dir():
            raise UserError(f"--cleanrl '{opts.cleanrl}' holds no cleanrl/ and cleanrl_utils/: give the folder of a "
                            "CleanRL checkout")
        if not script.is_file():
            raise UserError(f"'{script}' does not exist: give a script of the checkout's cleanrl/ folder, "
                            "e.g. ppo_atari.py")
        if not opts.minutes > 0:
            raise UserError(f"--minutes must be above 0, got {opts.minutes:g}")
        if opts.out.exists():
            raise UserError(f"--out '{opts.out}' exists (a run's events): give a new directory, or move it away first")
        if opts.python and not shutil.which(opts.python):
            raise UserError(f"--python '{opts.python}' is not an executable: give the python of CleanRL's venv")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if opts.python:
        python = os.path.abspath(shutil.which(opts.python))  # the child runs in --out: no relative path
    else:
        from throughput import cleanrl_venv

        python = cleanrl_venv()
    out = opts.out.resolve()
    out.mkdir(parents=True)
    spec = dict(out=str(out), minutes=opts.minutes, algo=opts.script.split("_")[0],
                system=f"CleanRL {cleanrl_commit(opts.cleanrl)}", command=shown_command(opts, flags))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        [str(opts.cleanrl.resolve())] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    print(f"CleanRL's {opts.script} for {opts.minutes:g} minute{'s' if opts.minutes != 1 else ''} into {opts.out} "
          f"(its output: {opts.out / LOG})", flush=True)
    with open(out / LOG, "w") as log:
        child = subprocess.Popen([python, "-c", CHILD, str(Path(__file__).resolve()), json.dumps(spec), str(script),
                                  *flags], cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            status = child.wait(timeout=60 * opts.minutes + GRACE_S)
        except subprocess.TimeoutExpired:  # it logged nothing since the limit: interrupt it, its events kept
            child.send_signal(signal.SIGINT)
            child.wait()
            print(f"error: the script was still running {GRACE_S} s after the limit without a logging call that "
                  f"could stop it: interrupted (events kept, no record; its output: {opts.out / LOG})", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C reached the script too; wait while it closes its writer
            child.wait()
            print(f"interrupted: events kept in {opts.out}, no record (the run did not finish)", file=sys.stderr)
            return 130
    if status != 0 or not (out / RECORD).exists():
        lines = [line for line in (out / LOG).read_text(errors="replace").splitlines() if line.strip()]
        print(f"error: CleanRL's {opts.script} exited with status {status} and wrote no record: "
              f"{lines[-1] if lines else 'no output'} (its output: {opts.out / LOG})", file=sys.stderr)
        return 1
    record = json.loads((out / RECORD).read_text())
    print(f"stopped at the {record['stopped']} after {record['steps']:,} agent steps in {record['seconds']:.0f} s; "
          f"record {opts.out / RECORD}")
    print(f"next: python benchmark/report.py --extract-peer {shlex.quote(str(opts.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
