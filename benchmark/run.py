"""Run a benchmark: every algorithm x game x seed of a run list, a few at a time here or as a Slurm array.

A run list (`benchmark/lists/NAME.toml`) declares what to run, never how: the algorithms (each one a
script `{algo}_atari.py` at the repository root), the games (`{Game}NoFrameskip-v4`; `"all"` means the 57
of `benchmark/reference/atari_random_human.csv`), the seeds, the budget in agent steps, and optional extra
flags for every run (`flags`) or for the runs of one algorithm (`[algorithm_flags]`). Each run gets its own
directory RUNS_DIR/{game}__{algo}__{seed}/, where the script writes its TensorBoard events, checkpoint.pt
and model file (`--save-model --run-name ... --runs-dir ...`), and where this runner keeps:
  run.json     what ran: the list entry, and for each attempt the command, the git commit, start and end
               times (UTC) and exit status; once finished, the resolved settings from the model file
  console.log  the script's own output, every attempt appended
A run's state decides what happens to it, so the same command can be repeated after any stop:
  done    model file present and the last attempt exited 0 with at least this budget: skipped
  running its last attempt's process is still alive on this machine: skipped, never launched twice
  resume  checkpoint.pt present (interrupted, or finished with a smaller budget): continued with
          `--resume RUN_DIR --total-timesteps N`; every other setting comes from the checkpoint
  stale   TensorBoard events but no checkpoint (killed before its first one): the directory is moved
          aside to {name}.stale-{time}, since a fresh start in it would mix two runs' events
  start   otherwise: a fresh run
Runs start seed-major (every game and algorithm of seed 1 first), so a partial benchmark already covers
every game. With `--parallel K` and at least K cores, each run is pinned to its own share of the cores
(the scripts size their thread pools to the cores they are given). SIGINT or SIGTERM stops the runner
as the scripts stop: it passes the signal on, each running run saves its checkpoint, and no new run
starts; a second signal is passed on too, which stops the runs at once.

Usage:
    python benchmark/run.py cpu_2M                          # one at a time, into runs/benchmark/cpu_2M
    python benchmark/run.py three_games --algo ppo --algo dqn --parallel 3 --runs-dir ../bench_runs
    python benchmark/run.py three_games --dry-run           # each run's state and command; starts nothing
    python benchmark/run.py atari57 --slurm                 # writes an sbatch file: array task i runs
    python benchmark/run.py atari57 --index 17              #   this, run 17 of the plan
Then `python benchmark/report.py --extract RUNS_DIR` and `python benchmark/report.py` (benchmark/README.md).
Exit status: 0 every run finished, 1 some run failed, 128+signal stopped, 2 a mistake in the command or list.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent  # the training scripts live here, and run from here
sys.path.insert(0, str(HERE))
from report import Parser  # noqa: E402  (one home for the one-line error of both command lines)
LISTS = HERE / "lists"
GAMES_CSV = HERE / "reference" / "atari_random_human.csv"
RECORD = "run.json"
CONSOLE = "console.log"
LIST_KEYS = {"description", "algorithms", "games", "seeds", "total_timesteps", "flags", "algorithm_flags", "slurm"}


class UserError(Exception):
    """A mistake in the command line or the run list: main() prints it as one line and exits 2."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of a list: an algorithm on a game with a seed and a budget."""

    algorithm: str
    game: str
    seed: int
    total_timesteps: int  # agent steps (1 agent step = 4 frames)
    flags: tuple[str, ...] = ()  # extra flags of the list for this run

    @property
    def name(self) -> str:
        return f"{self.game}__{self.algorithm}__{self.seed}"

    @property
    def env_id(self) -> str:
        return f"{self.game}NoFrameskip-v4"  # CleanRL's ids: no sticky actions, full frame-skip control

    @property
    def script(self) -> str:
        return f"{self.algorithm}_atari.py"

    @property
    def model_file(self) -> str:
        """The model the script saves at the end: `{exp_name}.model`, exp_name `{algo}_atari` unless a flag sets it."""
        exp_name = f"{self.algorithm}_atari"
        for i, flag in enumerate(self.flags):
            if flag == "--exp-name" and i + 1 < len(self.flags):
                exp_name = self.flags[i + 1]
            elif flag.startswith("--exp-name="):
                exp_name = flag.split("=", 1)[1]
        return f"{exp_name}.model"


def known_algorithms() -> list[str]:
    return sorted(p.name[: -len("_atari.py")] for p in REPO.glob("*_atari.py"))


def known_games() -> list[str]:
    with open(GAMES_CSV, newline="") as f:
        return [row["game"] for row in csv.DictReader(f)]


def find_list(spec: str) -> Path:
    """A list given by name (benchmark/lists/NAME.toml) or by the path of a .toml file."""
    path = Path(spec)
    if path.suffix == ".toml" and path.is_file():
        return path
    named = LISTS / f"{spec}.toml"
    if named.is_file():
        return named
    names = ", ".join(sorted(p.stem for p in LISTS.glob("*.toml")))
    raise UserError(f"unknown run list '{spec}': give one of {names} or the path of a .toml file")


def string_list(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{what} must be a list of strings, got {value!r}")
    return value


def plan(run_list: dict, list_name: str, algorithms: list[str], games: list[str],
         only: list[str] | None = None) -> list[Entry]:
    """Every run of a parsed list, checked against the known algorithms and games, in seed-major order."""
    unknown_keys = sorted(set(run_list) - LIST_KEYS)
    if unknown_keys:
        raise UserError(f"list {list_name}: unknown key '{unknown_keys[0]}' (known: {', '.join(sorted(LIST_KEYS))})")
    for key in ("algorithms", "games", "seeds", "total_timesteps"):
        if key not in run_list:
            raise UserError(f"list {list_name}: '{key}' is missing")
    list_algorithms = string_list(run_list["algorithms"], f"list {list_name}: 'algorithms'")
    for algorithm in only or []:
        if algorithm not in list_algorithms:
            raise UserError(f"--algo {algorithm}: not an algorithm of list {list_name} ({', '.join(list_algorithms)})")
    if only:  # a list may name an algorithm whose script is not written yet: --algo leaves it out
        list_algorithms = [a for a in list_algorithms if a in only]
    for algorithm in list_algorithms:
        if algorithm not in algorithms:
            raise UserError(f"unknown algorithm '{algorithm}' (list {list_name}): there is no {algorithm}_atari.py "
                            f"(known: {', '.join(algorithms)}; --algo runs only some of the list)")
    list_games = games if run_list["games"] == "all" else string_list(run_list["games"], f"list {list_name}: 'games'")
    for game in list_games:
        if game not in games:
            raise UserError(f"unknown game '{game}' (list {list_name}): not one of the 57 games of "
                            f"benchmark/reference/atari_random_human.csv, spelled as there (e.g. BeamRider)")
    seeds = run_list["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"list {list_name}: 'seeds' must be a list of integers, got {seeds!r}")
    budget = run_list["total_timesteps"]
    if not isinstance(budget, int) or budget < 1:
        raise UserError(f"list {list_name}: 'total_timesteps' must be a positive number of agent steps, got {budget!r}")
    flags = string_list(run_list.get("flags", []), f"list {list_name}: 'flags'")
    algorithm_flags = run_list.get("algorithm_flags", {})
    if not isinstance(algorithm_flags, dict):
        raise UserError(f"list {list_name}: [algorithm_flags] must be a table of algorithm = [flags]")
    for algorithm, extra in algorithm_flags.items():
        string_list(extra, f"list {list_name}: algorithm_flags.{algorithm}")
    return [Entry(algorithm, game, seed, budget, tuple(flags + algorithm_flags.get(algorithm, [])))
            for seed in seeds for game in list_games for algorithm in list_algorithms]


def read_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_record(run_dir: Path, record: dict) -> None:
    """Write run.json through a temporary file and a rename: a stop never leaves half a record."""
    tmp = run_dir / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, run_dir / RECORD)


def still_running(attempt: dict, name: str) -> bool:
    """Whether an attempt's process is alive on this machine (e.g. left behind by a runner that was killed)."""
    pid = attempt.get("pid")
    if attempt.get("end") is not None or pid is None or attempt.get("host") != platform.node():
        return False
    try:
        return name in Path(f"/proc/{pid}/cmdline").read_text()  # not another process that got the same pid
    except OSError:
        return False


def run_state(run_dir: Path, entry: Entry) -> str:
    """'done', 'running', 'resume', 'stale' or 'start': what the runner does with this run (module docstring)."""
    record = read_record(run_dir)
    if record and record.get("attempts") and still_running(record["attempts"][-1], entry.name):
        return "running"
    if ((run_dir / entry.model_file).exists() and record is not None and record.get("exit_status") == 0
            and record.get("entry", {}).get("total_timesteps", 0) >= entry.total_timesteps):
        return "done"
    if (run_dir / "checkpoint.pt").exists():
        return "resume"
    if any(run_dir.glob("events.out.tfevents.*")):
        return "stale"
    return "start"


def script_command(entry: Entry, state: str, runs_arg: str) -> list[str]:
    """The script and its arguments (without the interpreter), as run from the repository root."""
    if state == "resume":  # the checkpoint holds every setting; only the budget comes from the list
        return [entry.script, "--resume", os.path.join(runs_arg, entry.name),
                "--total-timesteps", str(entry.total_timesteps)]
    return [entry.script, "--env-id", entry.env_id, "--seed", str(entry.seed),
            "--total-timesteps", str(entry.total_timesteps), "--save-model",
            "--run-name", entry.name, "--runs-dir", runs_arg, *entry.flags]


def git_commit() -> tuple[str, bool | None]:
    """(`git rev-parse HEAD` of the repository or "unknown", whether tracked files differ from it)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=30)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", None
    if head.returncode != 0:
        return "unknown", None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def resolved_settings(model_path: Path) -> dict | None:
    """The `args` entry of a model file: every setting the run resolved, defaults included."""
    import torch  # only here: the runner itself starts in a fraction of a second

    try:
        return torch.load(model_path, map_location="cpu", weights_only=True).get("args")
    except Exception as e:  # a model the runner cannot read is reported, not fatal
        print(f"warning: cannot read the settings of {model_path}: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def check_writable(runs_dir: Path) -> None:
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        probe = runs_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write in the runs directory '{runs_dir}' ({e.strerror or e}): give another --runs-dir")


def core_slots(parallel: int) -> list[set[int]] | None:
    """Disjoint sets of this process's cores, one per parallel run; None when there are fewer cores than runs."""
    if parallel <= 1 or not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if parallel > len(cores):
        return None
    share = len(cores) // parallel
    return [set(cores[i * share : (i + 1) * share]) for i in range(parallel)]


def slurm_script(list_arg: str, count: int, runs_dir: Path, options: list[str], only: list[str],
                 throttle: int | None) -> str:
    """An sbatch file whose array task i runs `benchmark/run.py LIST --index i` (run i of the plan)."""
    name = Path(list_arg).stem
    only_flags = "".join(f" --algo {shlex.quote(a)}" for a in only)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=bench-{name}",
        f"#SBATCH --array=0-{count - 1}" + (f"%{throttle}" if throttle else ""),
        f"#SBATCH --output={runs_dir}/slurm-%A_%a.out",
        # SIGTERM to the batch shell (exec'd into the runner) 5 minutes before the time limit: the run saves
        # its checkpoint, and the next submission of the array resumes it.
        "#SBATCH --signal=B:TERM@300",
        *[f"#SBATCH {option}" for option in options],
        f"# Written by benchmark/run.py for the run list '{list_arg}' ({count} runs). Array task i runs run i of",
        f"# the plan, which `python benchmark/run.py {shlex.quote(list_arg)}{only_flags} --dry-run` lists. Finished",
        "# runs are skipped and interrupted ones resumed, so submitting this file again completes the benchmark.",
        f"cd {shlex.quote(str(REPO))}",
        f"PYTHON=${{PYTHON:-{shlex.quote(sys.executable)}}}  # the interpreter that wrote this file, unless set",
        f'exec "$PYTHON" benchmark/run.py {shlex.quote(list_arg)} --runs-dir {shlex.quote(str(runs_dir))}'
        f'{only_flags} --index "$SLURM_ARRAY_TASK_ID"',
    ]
    return "\n".join(lines) + "\n"


class Runner:
    """Launches runs as subprocesses, at most `parallel` at once, and keeps each run's record."""

    def __init__(self, list_name: str, runs_dir: Path, runs_arg: str, parallel: int, total: int, done: int):
        self.list_name, self.runs_dir, self.runs_arg = list_name, runs_dir, runs_arg
        self.parallel, self.total, self.done, self.failed = parallel, total, done, []
        self.slots = core_slots(parallel)
        self.free = list(range(parallel))
        self.running: dict[subprocess.Popen, tuple[Entry, int, float]] = {}
        self.stop: int | None = None
        self.commit, self.dirty = git_commit()

    def handle_signal(self, signum: int, frame) -> None:
        self.stop = self.stop or signum
        print(f"\n{signal.Signals(signum).name}: passed on to {len(self.running)} running run(s), which save their "
              f"checkpoint and stop; no new run starts", flush=True)
        for process in list(self.running):
            process.send_signal(signum)

    def progress(self) -> str:
        return f"[{self.done}/{self.total} done, {len(self.failed)} failed, {len(self.running)} running]"

    def launch(self, entry: Entry, state: str) -> None:
        run_dir = self.runs_dir / entry.name
        if state == "stale":
            aside = run_dir.with_name(f"{entry.name}.stale-{time.strftime('%Y%m%dT%H%M%S')}")
            run_dir.rename(aside)
            print(f"{entry.name}: events but no checkpoint (killed before its first one); moved to {aside.name}, "
                  f"starting afresh", flush=True)
            state = "start"
        run_dir.mkdir(parents=True, exist_ok=True)
        command = script_command(entry, state, self.runs_arg)
        record = read_record(run_dir) or {}
        record["entry"] = dict(dataclasses.asdict(entry), flags=list(entry.flags), list=self.list_name,
                               env_id=entry.env_id)
        record.setdefault("attempts", []).append({
            "command": "python " + shlex.join(command), "cwd": "the repository root", "commit": self.commit,
            "uncommitted_changes": self.dirty, "host": platform.node(), "start": now(), "end": None,
            "exit_status": None})
        record["exit_status"] = None
        write_record(run_dir, record)
        slot = self.free.pop(0)
        cores = self.slots[slot] if self.slots else None
        with open(run_dir / CONSOLE, "a") as console:
            console.write(f"\n=== {now()} python {shlex.join(command)}\n")
            console.flush()
            # Its own process group: a Ctrl-C in the terminal reaches only the runner, which passes it on once.
            process = subprocess.Popen([sys.executable, *command], cwd=REPO, stdin=subprocess.DEVNULL,
                                       stdout=console, stderr=subprocess.STDOUT, process_group=0,
                                       preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
        self.running[process] = (entry, slot, time.monotonic())
        record["attempts"][-1]["pid"] = process.pid
        write_record(run_dir, record)
        what = "resuming from its checkpoint" if state == "resume" else "starting"
        pinned = f", cores {sorted(cores)}" if cores else ""
        print(f"{self.progress()} {entry.name}: {what} (log {run_dir / CONSOLE}{pinned})", flush=True)

    def finish(self, process: subprocess.Popen, status: int) -> None:
        entry, slot, started = self.running.pop(process)
        self.free.append(slot)
        run_dir = self.runs_dir / entry.name
        record = read_record(run_dir) or {"entry": dataclasses.asdict(entry), "attempts": [{}]}
        record["attempts"][-1].update(end=now(), exit_status=status)
        record["exit_status"] = status
        model = run_dir / entry.model_file
        if status == 0 and model.exists():
            record["settings"] = resolved_settings(model)
        write_record(run_dir, record)
        hours = (time.monotonic() - started) / 3600
        if status == 0:
            self.done += 1
            outcome = "finished"
        elif status > 128 and status - 128 in (signal.SIGINT, signal.SIGTERM):
            outcome = f"stopped by {signal.Signals(status - 128).name} (checkpoint kept; run again to resume)"
        else:
            self.failed.append(entry.name)
            outcome = f"FAILED with exit status {status} (see {run_dir / CONSOLE})"
        print(f"{self.progress()} {entry.name}: {outcome} after {hours:.2f} h", flush=True)

    def run(self, queue: list[tuple[Entry, str]]) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.handle_signal)
        queue = list(queue)
        while queue or self.running:
            while queue and len(self.running) < self.parallel and self.stop is None:
                self.launch(*queue.pop(0))
            if not self.running:
                break
            time.sleep(0.5)
            for process in list(self.running):
                status = process.poll()
                if status is not None:
                    # a script killed by a signal it did not handle shows as -signum; report 128+signum like a shell
                    self.finish(process, status if status >= 0 else 128 - status)
        if self.stop is not None:
            print(f"stopped: {self.done}/{self.total} runs done; run the same command again to go on", flush=True)
            return 128 + self.stop
        if self.failed:
            print(f"{len(self.failed)} run(s) failed: {', '.join(self.failed)}", flush=True)
            return 1
        if self.done < self.total:
            print(f"{self.done}/{self.total} runs done; the others are running in other processes", flush=True)
        else:
            print(f"all {self.total} runs of {self.list_name} done in {self.runs_dir}", flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("list", help="a run list: a name in benchmark/lists/ (e.g. cpu_2M) or a .toml file")
    parser.add_argument("--runs-dir",
                        help="parent of the run directories (default: runs/benchmark/LIST in the repository)")
    parser.add_argument("--parallel", type=int, help="runs at once on this machine (default 1); with --slurm, "
                        "the most array tasks at once (default: no limit)")
    parser.add_argument("--algo", action="append", help="run only this algorithm of the list (repeatable)")
    parser.add_argument("--slurm", action="store_true", help="write a Slurm array job (one task per run) and exit")
    parser.add_argument("--index", type=int,
                        help="run only run INDEX of the plan (0-based; what array task INDEX runs)")
    parser.add_argument("--dry-run", action="store_true", help="print each run's state and command, start nothing")
    args = parser.parse_args(argv)

    try:
        if args.parallel is not None and args.parallel < 1:
            raise UserError(f"--parallel must be at least 1, got {args.parallel}")
        if args.slurm and args.index is not None:
            raise UserError("--slurm writes the job whose tasks use --index: give one of them")
        list_path = find_list(args.list)
        try:
            run_list = tomllib.loads(list_path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"run list {list_path.name} is not valid TOML: {e}")
        list_name = list_path.stem
        entries = plan(run_list, list_name, known_algorithms(), known_games(), args.algo)
        runs_dir = Path(args.runs_dir or REPO / "runs" / "benchmark" / list_name).resolve()
        if not args.dry_run:  # a dry run writes nothing
            check_writable(runs_dir)
        if args.index is not None:
            if not 0 <= args.index < len(entries):
                raise UserError(f"--index {args.index} is outside the plan of {list_name}: 0 to {len(entries) - 1}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # The scripts run from the repository root: give them the runs directory relative to it when inside it,
    # so that commands and settings recorded there name no one machine's paths.
    runs_arg = str(runs_dir.relative_to(REPO)) if runs_dir.is_relative_to(REPO) else str(runs_dir)
    list_arg = args.list if (LISTS / f"{args.list}.toml").is_file() else str(list_path.resolve())

    if args.slurm:
        path = runs_dir / f"{list_name}.sbatch"
        path.write_text(slurm_script(list_arg, len(entries), runs_dir, run_list.get("slurm", {}).get("options", []),
                                     args.algo or [], args.parallel))
        print(f"wrote {path}: a Slurm array of {len(entries)} tasks (0-{len(entries) - 1}), one per run")
        print(f"submit it with:  sbatch {shlex.quote(str(path))}")
        return 0

    numbered = list(enumerate(entries))
    if args.index is not None:
        numbered = [numbered[args.index]]
    states = [(i, entry, run_state(runs_dir / entry.name, entry)) for i, entry in numbered]
    if args.dry_run:
        description = f" ({run_list['description']})" if "description" in run_list else ""
        print(f"{list_name}{description}: runs in {runs_dir}")
        for i, entry, state in states:
            shown = "-" if state == "done" else "python " + shlex.join(
                script_command(entry, "start" if state == "stale" else state, runs_arg))
            print(f"{i:4d} {entry.name:36s} {state:6s} {shown}")
        return 0

    for i, entry, state in states:
        if state == "running":
            print(f"{entry.name}: still running in another process (see its run.json); left alone", flush=True)
    queue = [(entry, state) for _, entry, state in states if state not in ("done", "running")]
    done = sum(1 for *_, state in states if state == "done")
    parallel = args.parallel or 1
    counts = {s: sum(1 for *_, state in states if state == s) for s in ("done", "running", "resume", "stale", "start")}
    print(f"{list_name}: {len(states)} run(s) in {runs_dir}: {counts['done']} done (skipped), {counts['resume']} to "
          f"resume, {counts['start'] + counts['stale']} to start" + (f", {counts['running']} running elsewhere"
          if counts["running"] else "") + f"; {min(parallel, max(len(queue), 1))} at a time", flush=True)
    return Runner(list_name, runs_dir, runs_arg, parallel, len(states), done).run(queue)


if __name__ == "__main__":
    sys.exit(main())
