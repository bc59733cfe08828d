"""The run around any algorithm: settings, process, run directory, checkpoints, evaluation and replay.

`wrappers.py` is the game; this module is everything else a training script needs that is not its
algorithm, written once so that `ppo_atari.py`, `dqn_atari.py` and `a2c_atari.py` (and any copy a
researcher makes of one) read as their algorithm, as `pqn_atari.py` does. It is a library the script calls, never a framework
that calls the script: `main()` keeps its own loop and says every step of it.

    args, checkpoint = harness.parse(Args, algo="ppo")  # flags, --resume's saved settings, range checks
    proc = harness.setup_process(args)                  # threads, denormals, seeds, torchrun, device
    harness.start_from(checkpoint, model, optimizer, args, proc)  # --resume's weights, optimizer, streams
    run = harness.Run(args, proc, "ppo", model, optimizer, checkpoint, total_steps, num_actions, settings=...)
    ... the algorithm's loop, calling:
        run.timer("env"), run.log_episodes(info, step), run.log(step, scalars), run.check_finite(step, loss)
        run.checkpoint_due(step, final), run.save_checkpoint(step, **extra), run.should_stop(step)
        run.log_speed(step), run.evaluate_if_due(step, act)
    run.finish(step, act)                               # final model, final evaluation, or the stop report

What lives here, and the contracts it keeps:
  - `RunArgs`: the settings that mean the same in every script, declared once. A script's `Args`
    extends it with the algorithm's fields and may override a default (PPO and PQN 8 envs, DQN 1, A2C 16).
  - Model files and checkpoints: dicts of plain types and tensors (format 1) that load with
    `torch.load(..., weights_only=True)`, so a model file can never run code; written atomically.
  - Episode boundaries and scores come from `wrappers.py`; the TensorBoard tags are the same everywhere:
    charts/episodic_return (the raw score of a whole game), charts/episodic_length, charts/SPS,
    charts/learning_rate, losses/..., time/<phase> (seconds spent so far), eval/episodic_return.
  - Errors a user can act on end in one line and exit status 2 (`fail`); a loss that is no longer finite
    ends in one line and exit status 1, leaving the last checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.distributed as dist
import tyro

import wrappers

MODEL_FORMAT = 1  # version of the model/checkpoint dict below; a file of another format is refused in one line


def bf16_default(device_type: str, cuda_capability: tuple[int, int] | None, cpu_flags: set[str]) -> bool:
    """--bf16's default: whether the device that computes has bf16 matrix units, as RunArgs.bf16's --help says.

    A CUDA GPU has them from compute capability 8.0 (Ampere; torch.cuda.is_bf16_supported(including_emulation=
    False) asks the same); an older one only emulates bf16, as does a CPU without AVX512-BF16 or AMX, and
    emulated bf16 is slower (a DQN update 283 against 146 ms in fp32 on one CPU, benchmark/results/dqn_speed.txt). Only the device
    in use counts: with --no-cuda the CPU answers, whatever GPU the machine has.
    """
    if device_type == "cuda":
        return cuda_capability is not None and cuda_capability >= (8, 0)
    if device_type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags)
    return False


def read_cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (every word of it; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(f.read().split())
    except OSError:
        return set()


def native_bf16(device: torch.device | str | None = None) -> bool:
    """`bf16_default` for `device` on this machine (None: the device a run here uses by default)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return bf16_default(device.type, capability, read_cpu_flags())


@dataclass
class RunArgs:
    """Settings of the run around the algorithm, the same in every script (CleanRL's flag names)."""

    exp_name: str | None = None
    """experiment name, part of the run name and the model file name (None: the script's file name, e.g. ppo_atari)"""
    seed: int = 1
    """seed of Python, NumPy, torch and the envs (env i gets seed + i; under torchrun rank r's follow rank r-1's)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """use a CUDA GPU when there is one (under torchrun local rank r on GPU r mod the GPUs); --no-cuda: the CPU"""
    run_name: str | None = None
    """directory name under --runs-dir (None: `{env_id}__{exp_name}__{seed}__{unix time}`)"""
    runs_dir: str = "runs"
    """parent directory of the run directories (TensorBoard events, checkpoint.pt, the model file)"""

    env_id: str = "BreakoutNoFrameskip-v4"
    """the game (`BreakoutNoFrameskip-v4`, `ALE/Breakout-v5` or `breakout`); with --run, the model's game"""
    total_timesteps: int = 10_000_000
    """agent steps of the whole job, summed over all envs and all processes (1 agent step = 4 frames)"""
    num_envs: int = 8
    """parallel game environments per process (under torchrun the job has num_envs x processes)"""
    env_backend: Literal["native", "sync", "async"] = "native"
    """`native` (ale-py's C++ vector env), `sync` or `async` (gymnasium vector envs); see wrappers.py"""
    env_threads: int = 0
    """emulator threads of the native backend (0: one per env, at most the cores of this process)"""
    repeat_action_probability: float = 0.0
    """sticky actions (Machado et al. 2018): 0 as Mnih et al. 2015 and CleanRL, 0.25 as Dopamine; also evaluation, --run"""

    torch_threads: int | None = None
    """torch intra-op threads (None: this process's cores, shared among local ranks); two runs on one machine: split them"""
    inference_threads: int | None = None
    """torch threads for acting on a batch of num_envs observations (None: --torch-threads)"""
    flush_denormal: bool = True
    """treat subnormal floats (below 1.2e-38) as zero on CPU: Adam's moments decay into that slow range in long runs"""
    channels_last: bool = True
    """NHWC memory format for the convolutions and the rollout's frames: oneDNN's fast path on CPU"""
    bf16: tyro.conf.DisallowNone[bool | None] = None
    """bf16 autocast for the network (other numerics: the same seed gives other losses); None: by the device in use:
    CUDA GPU of compute capability 8.0 or later (A100, RTX 30xx, H100) -> on;
    older CUDA GPU (V100, T4: bf16 emulated) -> off;
    CPU with AVX512-BF16 or AMX -> on; other CPU -> off.
    DQN acts in fp32 either way; PPO, A2C and PQN act and learn in bf16"""
    fused_adam: bool = True
    """torch's fused Adam kernel where the optimizer is Adam: the same update in one pass; may differ in the last bits"""
    compile: bool = False
    """torch.compile the network (TorchInductor): a compile at the start, and other losses for the same seed"""

    save_model: bool = True
    """save a checkpoint every --checkpoint-every agent steps, on a stop and at the end, and the model at the end (--no-save-model: none)"""
    checkpoint_every: int = 500_000
    """agent steps between checkpoints (with --save-model); runs/<run_name>/checkpoint.pt is overwritten"""
    resume: str | None = None
    """a run directory to continue from its checkpoint.pt (its settings; typed --total-timesteps, speed, eval flags win)"""
    eval_every: int = 500_000
    """agent steps between evaluations of --eval-episodes whole games (eval/episodic_return); one more at the end"""
    eval_episodes: int = 10
    """whole games per evaluation (0: no evaluation)"""
    eval_video: bool = False
    """at each evaluation, also film one game to <run dir>/videos/eval_<agent step>.mp4 (as Dopamine's evaluation does)"""
    run: str | None = None
    """model file to replay instead of training, or `random` (a uniform policy): play --run-episodes games, print scores"""
    run_episodes: int = 10
    """with --run: whole games to play"""
    video: bool = True
    """with --run: write the games to videos/<model name>.mp4 (colour screen | the agent's 84x84 input)"""
    progress: bool = True
    """show a progress bar on stderr (steps, steps/s, time left, recent score)"""


# Settings of how a run computes (where, on how many threads, in which memory format or precision), of what
# it reports and of how long it goes on, not of what it learns: --resume takes them from the command line
# when given there (a run may continue on another machine), and every other setting from the checkpoint.
RESUMABLE_FLAGS = ("total_timesteps", "cuda", "env_backend", "env_threads", "torch_threads", "inference_threads",
                   "channels_last", "bf16", "fused_adam", "compile", "flush_denormal", "eval_every",
                   "eval_episodes", "eval_video", "progress")


def fail(msg: str) -> None:
    """End the process on a user's mistake: one line on stderr, exit status 2, no traceback (under torchrun
    every rank exits, rank 0 alone says why)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def flag(name: str) -> str:
    """The command-line spelling of an Args field: learning_rate -> --learning-rate."""
    return "--" + name.replace("_", "-")


def given_on_command_line(name: str) -> bool:
    """Whether the flag of field `name` (or `--flag=...`, `--no-flag`, in either spelling) was typed."""
    spellings = {f"--{prefix}{n}" for prefix in ("", "no-", "no_") for n in (name.replace("_", "-"), name)}
    return any(a.split("=", 1)[0] in spellings for a in sys.argv[1:])


def check_range(args, positive=(), non_negative=(), at_least_one=(), unit_interval=(), probability=()) -> None:
    """Fail with one line on the first named setting out of its range. A field whose value is None (meaning
    "a default chosen elsewhere") is skipped; a NaN fails every check.

    positive: finite and > 0; non_negative: finite and >= 0; at_least_one: an integer >= 1;
    unit_interval: in [0, 1]; probability: in [0, 1) (a probability of 1 would never let go).
    """
    rules = [(positive, lambda v: math.isfinite(v) and v > 0, "a finite number above 0"),
             (non_negative, lambda v: math.isfinite(v) and v >= 0, "a finite number of at least 0"),
             (at_least_one, lambda v: v >= 1, "at least 1"),
             (unit_interval, lambda v: 0 <= v <= 1, "in [0, 1]"),
             (probability, lambda v: 0 <= v < 1, "in [0, 1)")]
    for names, ok, wanted in rules:
        for name in names:
            value = getattr(args, name)
            if value is not None and not ok(value):
                fail(f"{flag(name)} must be {wanted}, got {value}")


def cpp_compiler() -> str | None:
    """The C++ compiler that TorchInductor would find for its CPU kernels (CXX, else g++, c++, clang++)."""
    return next((path for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c and (path := shutil.which(c))),
                None)


def check_run_args(args: RunArgs, algo: str) -> None:
    """The range checks of the settings every script shares; the script adds its algorithm's."""
    check_range(args, at_least_one=("num_envs", "total_timesteps", "checkpoint_every", "eval_every",
                                    "run_episodes", "torch_threads", "inference_threads"),
                non_negative=("env_threads", "eval_episodes"), probability=("repeat_action_probability",))
    if args.run is not None and args.resume is not None:
        fail("--run replays a model file and --resume continues a training run: give one of them")
    if args.compile and args.run is None and cpp_compiler() is None:
        fail("--compile needs a C++ compiler for TorchInductor's CPU kernels and found none (CXX, g++, c++, "
             "clang++): install one (e.g. apt install g++) or leave out --compile")
    try:
        wrappers.resolve_game(args.env_id)
    except wrappers.EnvIdError as e:
        fail(str(e))


def check_writable_directory(path: str, what: str) -> None:
    """Fail with one line unless `path` is a directory this process can write, or can be made as one (it is
    not made here: a run that fails a later check leaves nothing behind)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        fail(f"{what} '{path}' cannot be a directory: '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{what} '{path}' is not writable here ('{existing}' is read-only for this user)")


def parse(args_class: type, algo: str, resumable: tuple[str, ...] = ()) -> tuple[RunArgs, dict | None]:
    """The settings of this run from the command line, and the checkpoint when it resumes.

    A new run takes its script's `--preset` (`apply_preset`). With --resume, every setting comes from the
    checkpoint except those in RESUMABLE_FLAGS (and the script's own `resumable` speed flags) that were
    typed on this command line. A checkpoint written by an older version of the script may lack newer
    settings (they take their defaults) or hold settings that no longer exist (they are dropped, with a
    warning). Then the shared range checks run; the script's own follow in its `check_args`.
    """
    args = tyro.cli(args_class)
    checkpoint = None
    if args.resume is None:
        args = apply_preset(args)
    if args.resume is not None and args.run is None:
        checkpoint = load_file(os.path.join(args.resume, "checkpoint.pt"), "checkpoint", algo)
        known = {f.name for f in dataclasses.fields(args_class)}
        saved = {k: v for k, v in checkpoint["args"].items() if k in known}
        dropped = sorted(set(checkpoint["args"]) - known)
        if dropped:
            print(f"warning: the checkpoint's settings {', '.join(dropped)} no longer exist; ignored", file=sys.stderr)
        saved["resume"] = args.resume
        for name in RESUMABLE_FLAGS + resumable:
            if given_on_command_line(name) or name not in checkpoint["args"]:
                saved[name] = getattr(args, name)
        ignored = [flag(name) for name in saved if name not in RESUMABLE_FLAGS + resumable + ("resume",)
                   and given_on_command_line(name) and getattr(args, name) != saved[name]]
        if ignored:
            print(f"warning: {', '.join(ignored)} ignored: a resumed run keeps the checkpoint's value (it decides "
                  f"what is learned); start a new run to change it", file=sys.stderr)
        args = args_class(**saved)
    check_run_args(args, algo)
    if args.run is None:
        check_writable_directory(args.resume or args.runs_dir, "--resume" if args.resume else "--runs-dir")
    if args.run is None and args.resume is None and args.run_name is not None:
        check_new_run_directory(os.path.join(args.runs_dir, args.run_name))
    return args, checkpoint


def apply_preset(args: RunArgs) -> RunArgs:
    """A new run's settings under its `--preset`: each setting the preset names takes the preset's value,
    unless its flag was typed (a typed flag always wins). A script without presets, or the preset of the
    published defaults (an empty one), changes nothing. A resumed run keeps its checkpoint's settings, in
    which the preset was applied when the run began."""
    presets = getattr(type(args), "PRESETS", None)
    if not presets:
        return args
    values = {name: value for name, value in presets[args.preset].items() if not given_on_command_line(name)}
    return dataclasses.replace(args, **values)


def holds_a_run(run_dir: str) -> bool:
    """Whether `run_dir` holds a run's files: a checkpoint, a model file or TensorBoard events (a folder that
    benchmark/run.py made for a run, holding only its own records, does not)."""
    return os.path.isdir(run_dir) and any(
        name == "checkpoint.pt" or name.endswith(".model") or name.startswith("events.out.tfevents")
        for name in os.listdir(run_dir))


def check_new_run_directory(run_dir: str) -> None:
    """Fail with one line if `run_dir` holds a run: a new run never writes into another run's directory."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        fail(f"run directory '{run_dir}' is a file: choose another --run-name")
    if os.path.isfile(os.path.join(run_dir, "checkpoint.pt")):
        fail(f"run directory '{run_dir}' already exists: continue that run with --resume {run_dir}, "
             f"or choose another --run-name")
    if holds_a_run(run_dir):
        fail(f"run directory '{run_dir}' already holds another run's files: choose another --run-name")


def lock_run_directory(run_dir: str) -> int:
    """Hold an exclusive lock on <run dir>/.lock for the life of this process, so that two processes never
    write one run directory (two --resume of the same run, say); the kernel drops the lock when the process
    ends, even by kill -9. Returns the lock's file descriptor."""
    import fcntl

    fd = os.open(os.path.join(run_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"another process is writing the run directory '{run_dir}': wait for it to end or stop it first")
    return fd


def check_memory(needed_bytes: int, what: str, fits: Callable[[int], str]) -> None:
    """Fail with one line, before anything is allocated, if `what` needs more memory than this machine has
    available (Linux's MemAvailable, less MEMORY_RESERVE for torch and the rest of the process); `fits(usable
    bytes)` says what would fit, e.g. the largest --buffer-size."""
    available = available_memory()
    if available is not None and needed_bytes > available - MEMORY_RESERVE:
        fail(f"{what} needs {needed_bytes / 1e9:.1f} GB of memory and this machine has {available / 1e9:.1f} GB "
             f"available: {fits(max(available - MEMORY_RESERVE, 0))}")


MEMORY_RESERVE = 2 * 10**9  # bytes kept free for torch, the network and the rest of the process
ENV_BYTES = 2 * 10**6  # host memory of one native emulator with its frame stack (1.7 MB measured, Breakout)


def check_rollout_memory(num_envs: int, num_steps: int, device: torch.device) -> None:
    """The emulators and, on the CPU, a rollout buffer of num_envs x num_steps uint8 observations (PPO, A2C,
    PQN) must fit in memory: checked before any env starts."""
    frames = num_steps * wrappers.FRAME_STACK * wrappers.SCREEN_SIZE**2 if device.type == "cpu" else 0
    per_env = ENV_BYTES + frames
    check_memory(num_envs * per_env, f"--num-envs {num_envs} with rollouts of --num-steps {num_steps}",
                 lambda usable: f"lower them (at most {usable // per_env:,} envs of {num_steps} steps fit)")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation without swapping (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass
class Process:
    """Where this process runs and how it shares the job: torchrun's rank and world, threads, device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    torch_threads: int
    inference_threads: int
    env_threads: int
    seed: int  # this rank's seed: env i of rank r gets args.seed + r * num_envs + i
    autocast: torch.autocast  # bf16 autocast on `device`, enabled by --bf16 as setup_process resolved it

    @property
    def bf16(self) -> bool:
        """Whether the network computes in bf16 here: --bf16, its None resolved for this device."""
        return bool(self.autocast._enabled) and self.autocast.fast_dtype == torch.bfloat16

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Data parallel: replace every gradient with the mean over the ranks (one all-reduce of all of them)."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over the ranks (itself in a single process)."""
        if self.world_size == 1:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether any rank says True (so that all ranks take the same branch)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def cuda_placement(local_rank: int, local_world_size: int, device_count: int) -> tuple[int, str]:
    """The GPU index of a local rank and the job's collective backend: each rank its own GPU while there are
    enough ("nccl"); with more ranks than GPUs the ranks share them round-robin, rank r on GPU r mod the
    GPUs, and talk over "gloo", since NCCL refuses two ranks on one GPU (gloo is also the fallback of CleanRL's multi-GPU script)."""
    return local_rank % device_count, "nccl" if local_world_size <= device_count else "gloo"


# The slowest evaluation we plan for, in agent steps/s summed over its envs: training with its updates runs at
# about 1,000 agent steps/s on 2 CPU cores (benchmark/studies/a2c_scaling.txt) and an evaluation only acts and emulates, so
# 100 leaves a margin of 10x for a busy or slow machine.
SLOWEST_EVAL_STEPS_PER_S = 100


def collective_timeout(args: RunArgs) -> datetime.timedelta:
    """How long a rank waits in a collective before the job is declared hung: NCCL's default 10 minutes,
    plus the longest evaluation. Rank 0 evaluates alone while the others wait in the next all-reduce; the
    longest has every game (and the filmed one) last the cap of 108,000 frames = 27,000 agent steps, at
    SLOWEST_EVAL_STEPS_PER_S: 45 more minutes for the default 10 games."""
    games = args.eval_episodes + (1 if args.eval_video and args.eval_episodes else 0)
    longest_eval = games * (wrappers.MAX_EPISODE_FRAMES // wrappers.FRAME_SKIP) / SLOWEST_EVAL_STEPS_PER_S
    return datetime.timedelta(minutes=10, seconds=longest_eval)


def setup_process(args: RunArgs) -> Process:
    """Process-wide settings, once, before any env starts: threads, denormals, torchrun, device, bf16 and seeds.

    OpenMP keeps its default wait policy: libgomp's threads spin for a while after each parallel region
    before they sleep, so the many small ops of an update find them awake. Measured on a 2-core Xeon
    (benchmark/studies/openmp_wait_policy.md): OMP_WAIT_POLICY=PASSIVE, which puts them to sleep at once,
    made DQN 1.6x, PPO 1.15x and A2C 1.13x slower. Two runs that each use every core of the same machine
    are many times slower whatever the policy (their threads wait at every op for a thread that is not
    running): give each run its share with --torch-threads, as benchmark/run.py --parallel does.

    GPUs (`cuda_placement`): under torchrun local rank r computes on cuda:r and the ranks all-reduce over
    NCCL. With more processes per node than GPUs the ranks share the GPUs round-robin (cuda:r mod the GPUs)
    and the whole job talks over gloo, which takes CUDA tensors, as NCCL refuses two ranks on one GPU;
    nodes are assumed alike. A launcher that shows each rank one GPU of its own (CUDA_VISIBLE_DEVICES per
    rank) makes every rank see one device, cuda:0, and so runs on gloo too. Collectives wait
    `collective_timeout`: long enough for rank 0's longest evaluation, when the other ranks wait for it.
    --bf16's None is decided here, for the device this rank uses (`bf16_default`), into `Process.autocast`."""
    # torchrun sets these; a plain `python script.py` is rank 0 of a world of 1.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    use_cuda = args.cuda and torch.cuda.is_available()
    backend = "gloo"
    if use_cuda:
        gpus = torch.cuda.device_count()
        index, backend = cuda_placement(local_rank, local_world_size, gpus)
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)  # the current device of NCCL, of the CUDA random stream and of autocast
        if world_size > 1 and backend == "gloo" and rank == 0:
            print(f"note: {local_world_size} processes per node share {gpus} GPU(s) round-robin; the job "
                  f"all-reduces over gloo (NCCL takes one process per GPU)", file=sys.stderr)
    else:
        device = torch.device("cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch_threads = args.torch_threads or max(1, cores // local_world_size)
    torch.set_num_threads(torch_threads)  # the update is CPU-bound on a CPU: use exactly our cores, no more
    torch.set_flush_denormal(args.flush_denormal)  # subnormal floats: see RunArgs.flush_denormal
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if world_size > 1:
        dist.init_process_group(backend=backend, timeout=collective_timeout(args))
    bf16 = args.bf16
    if bf16 is None:
        bf16 = bf16_default(device.type, torch.cuda.get_device_capability(device) if use_cuda else None,
                            read_cpu_flags())
    # Each rank plays other games: its seed is offset by the envs before it, so every env of the job has
    # its own seed, and one seed still drives everything.
    seed = args.seed + rank * args.num_envs
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return Process(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                   torch_threads=torch_threads, inference_threads=args.inference_threads or torch_threads,
                   env_threads=args.env_threads or max(1, min(args.num_envs, cores // local_world_size)),
                   seed=seed, autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16))


# --- rollout frames in the network's memory format ------------------------------------------------------------
# With --channels-last the convolutions read each frame as (84, 84, 4). A rollout buffer stored that way is
# reordered once, when a frame goes in, instead of at every forward pass over it (PPO reads each frame once
# per epoch), and a minibatch is gathered as whole frames. Only the layout changes, never a value.

def frame_buffer(shape: tuple[int, ...], channels_last: bool, device: torch.device) -> torch.Tensor:
    """Zeros of `shape` (..., C, H, W), uint8; with channels_last stored as (..., H, W, C) and seen in
    `shape`, so that any (N, C, H, W) slice or reshape of its leading dims is channels-last contiguous."""
    if not channels_last:
        return torch.zeros(shape, dtype=torch.uint8, device=device)
    *lead, c, h, w = shape
    return torch.zeros((*lead, h, w, c), dtype=torch.uint8, device=device).movedim(-1, -3)


def gather_frames(frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """frames[index] for (N, C, H, W) frames, in frames' memory format. index_select copies each frame as
    one block; frames[index] (advanced indexing) took 8x longer for PPO's minibatch of 256 on a 2-core Xeon
    (2.2 against 0.27 ms), and on a channels-last buffer index_select alone returns NCHW, which the
    network would then reorder (1.9 ms)."""
    if frames.is_contiguous(memory_format=torch.channels_last):
        return frames.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return frames.index_select(0, index)


# --- statistics of a rollout, over its valid steps --------------------------------------------------------------
# Under gymnasium 1.x NEXT_STEP autoreset (wrappers.py) a rollout holds reset steps whose action was ignored;
# the scripts weigh them 0 with a mask of valid steps, in their losses and in what they log.

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the entries where mask is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the valid entries (1: perfect, <= 0: useless); logged as
    losses/explained_variance by the actor-critic scripts."""
    mask = mask.float()
    returns_var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    error = returns - values
    error_var = masked_mean((error - masked_mean(error, mask)) ** 2, mask)
    return float("nan") if returns_var == 0 else float(1.0 - error_var / returns_var)


def sampling_act(agent: torch.nn.Module, proc: Process) -> Callable[[np.ndarray], np.ndarray]:
    """Acting outside training (evaluation, --run) for an actor-critic whose forward returns (logits, values):
    actions sampled from the policy, as in training; the greedy action can loop forever in a state the
    policy never learned to leave (Breakout, waiting to serve)."""
    from torch.distributions.categorical import Categorical

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), proc.autocast:
            logits, _ = agent(torch.from_numpy(obs).to(proc.device))
        return Categorical(logits=logits, validate_args=False).sample().cpu().numpy()

    return act


# --- model and checkpoint files ------------------------------------------------------------------------------

def script_name(args: RunArgs) -> str:
    """The experiment name: --exp-name, else the file name of the script whose Args these are."""
    if args.exp_name:
        return args.exp_name
    module = sys.modules.get(type(args).__module__)
    return os.path.splitext(os.path.basename(getattr(module, "__file__", "") or "experiment"))[0]


def to_cpu(obj):
    """`obj` with every tensor in it (through dicts, lists and tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def model_file(args: RunArgs, algo: str, model: torch.nn.Module, num_actions: int) -> dict:
    """A model file: enough to replay the agent and to know what it was trained on (plain types and CPU
    tensors only). `args` are as given: a --bf16 left to its default is saved as None, so that a resumed
    run decides it again for the device it then runs on."""
    return {
        "format": MODEL_FORMAT,
        "algo": algo,
        "env_id": args.env_id,
        "num_actions": int(num_actions),  # a numpy integer would not load with weights_only=True
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "args": dataclasses.asdict(args),
    }


def write_atomic(path: str, write: Callable[[io.BufferedWriter], object]) -> None:
    """`write(f)` into path + ".tmp", flushed to the disk, then renamed over `path`: a crash never leaves a
    half-written file behind. A full disk or an unwritable directory ends in one line (exit status 2), the
    ".tmp" removed and the file that was there unchanged."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on the disk before the rename makes them the file
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        fail(f"cannot write '{path}' ({e.strerror or e}); the file that was there is unchanged")


def save_atomic(obj: dict, path: str) -> None:
    """torch.save `obj` to `path` atomically (`write_atomic`). It is serialized in memory first: torch's zip
    writer reports a full disk as a RuntimeError ("unexpected pos") that names no cause, Python's write as
    the OSError it is."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, lambda f: f.write(buffer.getbuffer()))


# DQN's replay memory beside its checkpoint: an .npz of plain arrays (uncompressed, no pickles, so np.load
# with allow_pickle=False reads it), the memory's own arrays (ReplayMemory.state()) plus `global_step`, the
# step of the checkpoint it belongs to.

def save_replay(state: dict[str, np.ndarray], global_step: int, path: str) -> None:
    write_atomic(path, lambda f: np.savez(f, global_step=np.array(global_step, dtype=np.int64), **state))


def load_replay(path: str, global_step: int) -> dict[str, np.ndarray] | None:
    """The arrays saved beside the checkpoint of `global_step`; None when there are none (with a warning when
    a file is there that cannot be used: another step's, or a damaged one)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if int(saved["global_step"]) != global_step:
                raise ValueError(f"it is from step {int(saved['global_step'])}, the checkpoint from {global_step}")
            return {name: saved[name] for name in saved.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        print(f"warning: not using the replay memory '{path}' ({e})", file=sys.stderr)
        return None


def load_file(path: str, what: str, algo: str, device: torch.device | str = "cpu") -> dict:
    """torch.load a model or checkpoint file of this project (weights_only: no code runs), or fail with one line."""
    if not os.path.isfile(path):
        fail(f"{what} '{path}' does not exist")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file raises any of pickle's, zip's or torch's errors
        fail(f"cannot read {what} '{path}': not a file saved by {algo}_atari.py ({type(e).__name__})")
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT or "model" not in data:
        fail(f"{what} '{path}' is not a model file of this project (no format-{MODEL_FORMAT} 'model' entry)")
    if data.get("algo") != algo:
        fail(f"{what} '{path}' holds a '{data.get('algo')}' model; use {data.get('algo')}_atari.py with it")
    return data


def _cuda_in_use(device: torch.device | None) -> torch.device | int | None:
    """The GPU whose random stream is this process's: `device` when it is one; for None, the current GPU
    once this process has started CUDA (setup_process made it the run's device)."""
    if device is None:
        return torch.cuda.current_device() if torch.cuda.is_initialized() else None
    return device if device.type == "cuda" else None


def rng_states(device: torch.device | None = None) -> dict:
    """Python, NumPy and torch random states as plain types and tensors (loadable with weights_only), with
    the CUDA stream of the GPU in use only (`_cuda_in_use`; [] on the CPU): a checkpoint resumes on a machine
    with fewer GPUs, or none."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    cuda = _cuda_in_use(device)
    return {
        "python": random.getstate(),
        "numpy": [name, key.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(cuda)] if cuda is not None else [],
    }


def set_rng_states(states: dict, device: torch.device | None = None) -> None:
    """Put back what `rng_states` returned; the saved CUDA stream goes to the GPU in use, if there is one."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"].cpu())
    cuda = _cuda_in_use(device)
    if states["cuda"] and cuda is not None:
        torch.cuda.set_rng_state(states["cuda"][0].cpu(), cuda)


class isolated_rng:
    """Within the block, Python, NumPy and torch draw from a stream seeded by `seed`; after it, each stream
    is back where it was. Evaluation plays under it, so evaluating never changes what training draws."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.saved = rng_states()
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        set_rng_states(self.saved)


# --- signals --------------------------------------------------------------------------------------------------

class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (`kill`, Slurm at its time limit) during training asks the loop to stop
    at the end of its current iteration; the run then saves a checkpoint (with --save-model) that --resume
    continues. A second signal, or one after the loop, stops at once; the files already written stay."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.since = 0.0  # time.monotonic() of the first signal
        self.loop_done = False  # set after the training loop: nothing is left to stop gracefully
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        # A launcher may pass on the signal the process also got from the terminal (torchrun does): a
        # repeat within a second is the same request.
        if self.loop_done or (self.signal is not None and time.monotonic() - self.since > 1.0):
            print(f"\n{signal.Signals(signum).name}: stopping now", file=sys.stderr)
            sys.exit(128 + signum)
        if self.signal is not None:
            return
        self.signal, self.since = signum, time.monotonic()
        print(f"\n{signal.Signals(signum).name}: stopping at the training loop's next check, with a checkpoint "
              f"unless --no-save-model (send it again to stop at once)", file=sys.stderr)


# --- the run --------------------------------------------------------------------------------------------------

def settings_table(settings: dict) -> str:
    return "|setting|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in settings.items())


def _quiet_event_writer_errors(args) -> None:
    """threading.excepthook: the OSError that stops TensorBoard's event-writer thread (a full disk) is left to
    the main thread, which meets it at its next write and ends in one line; anything else prints as usual."""
    if issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
        return
    threading.__excepthook__(args)


class _Timer:
    """`with run.timer("env"):` adds the block's wall-clock seconds to run.times["env"]."""

    __slots__ = ("times", "phase", "start")

    def __init__(self, times: dict, phase: str):
        self.times, self.phase = times, phase

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.times[self.phase] += time.perf_counter() - self.start


def start_from(checkpoint: dict | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer, args: RunArgs,
               proc: Process) -> None:
    """Put the model, the optimizer and the random streams where the run starts: with a checkpoint
    (`harness.parse` returned it on --resume), where it left off; under torchrun every rank then takes rank
    0's parameters. The script restores anything else it saved (DQN's target network) from the same dict."""
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        state = checkpoint["optimizer"]
        # The fused choice is this command line's (--fused-adam is a speed flag), and it must be in place
        # before the state loads: load_state_dict puts Adam's step counters on the CPU or on the device by
        # the saved groups' `fused`, and a fused step needs them on the device.
        for group in state["param_groups"]:
            if "fused" in group:
                group["fused"] = args.fused_adam or None
        optimizer.load_state_dict(state)
        states = checkpoint["rng"] if isinstance(checkpoint["rng"], list) else [checkpoint["rng"]]
        if len(states) == proc.world_size:  # same job shape: every rank picks up its own streams
            set_rng_states(states[proc.rank], proc.device)
    if proc.world_size > 1:  # every rank starts from rank 0's parameters
        for p in model.parameters():
            dist.broadcast(p.data, src=0)


class Run:
    """One training run: its directory, TensorBoard writer, progress bar, checkpoints, evaluations and stop.

    Constructing it opens the run: rank 0 makes the run directory and the TensorBoard writer, and every rank
    starts listening for Ctrl-C and SIGTERM (`StopRequest`). Rank 0 writes files; every rank keeps the same
    schedule. The model and the optimizer are the script's, already placed by `start_from`.

    At the end of each iteration the loop asks two questions, in either order:
        if run.checkpoint_due(step, final): run.save_checkpoint(step, ...)   # periodic, at the end, on a stop
        if run.should_stop(step): break
    Both read one decision per step, agreed by every rank, so a stop always finds its checkpoint; a loop that
    never saves the checkpoint `checkpoint_due` asked for fails in `finish` with a RuntimeError.
    """

    def __init__(self, args: RunArgs, proc: Process, algo: str, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, checkpoint: dict | None, total_steps: int, num_actions: int,
                 phases: tuple[str, ...] = ("env", "inference", "update"), settings: dict | None = None):
        self.args, self.proc, self.algo = args, proc, algo
        self.model, self.optimizer = model, optimizer
        self.total_steps, self.num_actions = total_steps, num_actions
        self.exp_name = script_name(args)
        if checkpoint is not None:
            self.run_name, self.run_dir = checkpoint.get("run_name", os.path.basename(args.resume)), args.resume
            self.start_step = int(checkpoint["global_step"])
        else:
            self.run_name = args.run_name or f"{args.env_id.replace('/', '-')}__{self.exp_name}__{args.seed}__{int(time.time())}"
            self.run_dir = os.path.join(args.runs_dir, self.run_name)
            self.start_step = 0
        self.saved_step = self.start_step if checkpoint is not None else None  # agent step of checkpoint.pt
        self.next_checkpoint = self._next(self.start_step, args.checkpoint_every)
        self.next_eval = self._next(self.start_step, args.eval_every)
        self.last_eval_step: int | None = None
        self.times = dict.fromkeys((*phases, "eval"), 0.0)
        self.recent_returns: list[float] = []  # raw scores of this process's last 100 games
        self.start_time = time.perf_counter()
        self.stop = StopRequest()
        self.stopping = False  # the decision of the step below, the same on every rank
        self.decided_step: int | None = None

        self.writer = self.progress = None
        if proc.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            # A full disk stops the event writer's thread with an OSError that the next write re-raises here,
            # where it ends in one line (Run._events); the thread's own traceback would only repeat it.
            threading.excepthook = _quiet_event_writer_errors
            try:
                os.makedirs(self.run_dir, exist_ok=True)
                self.lock = lock_run_directory(self.run_dir)
                if checkpoint is None:  # checked again under the lock: a taken name fails, even in a race
                    check_new_run_directory(self.run_dir)
                # On resume, purge_step drops the events the interrupted run wrote after its checkpoint:
                # TensorBoard hides every earlier event at a step >= purge_step, and the checkpoint's own step
                # was logged before the checkpoint was written, so it is kept.
                self.writer = SummaryWriter(self.run_dir, purge_step=self.start_step + 1 if checkpoint else None)
            except OSError as e:
                fail(f"cannot write the run directory '{self.run_dir}' ({e.strerror or e})"
                     + ("" if checkpoint is not None else ": choose another --runs-dir"))
            table = dict(dataclasses.asdict(args), bf16=proc.bf16, exp_name=self.exp_name, run_dir=self.run_dir,
                         world_size=proc.world_size, device=str(proc.device), torch_threads=proc.torch_threads,
                         inference_threads=proc.inference_threads, env_threads=proc.env_threads,
                         start_step=self.start_step, **(settings or {}))
            self._events(lambda: self.writer.add_text("settings", settings_table(table), self.start_step))
            if args.progress:
                from tqdm import tqdm

                self.progress = tqdm(total=total_steps, initial=self.start_step, unit="step", unit_scale=True,
                                     dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)

    @staticmethod
    def _next(step: int, every: int) -> int:
        return (step // every + 1) * every

    def timer(self, phase: str) -> _Timer:
        """`with run.timer("env"):` counts the block's time to that phase (logged as time/<phase>)."""
        return _Timer(self.times, phase)

    def _events(self, write: Callable[[], object]) -> None:
        """One write to the TensorBoard events; a full disk or a lost directory ends in one line (exit 2), with
        the last checkpoint as it was."""
        try:
            write()
        except OSError as e:
            self.writer = None
            fail(f"cannot write the TensorBoard events in '{self.run_dir}' ({e.strerror or e}); "
                 + (f"the last checkpoint is kept: free some space, then --resume {self.run_dir}"
                    if self.saved_step is not None else "no checkpoint was saved yet"))

    def log(self, step: int, scalars: dict) -> None:
        """Write scalars (floats or 0-d tensors) at agent step `step` (rank 0 only)."""
        if self.writer is not None:
            for tag, value in scalars.items():
                value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                self._events(lambda: self.writer.add_scalar(tag, value, step))

    def close_events(self) -> None:
        if self.writer is not None:
            self._events(self.writer.close)
            self.writer = None

    def log_episodes(self, info: dict, step: int) -> None:
        """Log the raw score and length of every game that ended at this step (info from wrappers.py)."""
        if "_episode" not in info or not info["_episode"].any():
            return
        for i in np.flatnonzero(info["_episode"]):
            score = float(info["episode"]["r"][i])
            self.recent_returns = (self.recent_returns + [score])[-100:]
            self.log(step, {"charts/episodic_return": score, "charts/episodic_length": int(info["episode"]["l"][i])})

    def log_speed(self, step: int, **postfix) -> None:
        """charts/SPS (agent steps/s of the job since this process started) and time/<phase>, and the progress
        bar with the mean score of the last 100 games, `postfix` and the time per phase."""
        elapsed = time.perf_counter() - self.start_time
        self.log(step, {"charts/SPS": int((step - self.start_step) / max(elapsed, 1e-9)),
                        **{f"time/{phase}": seconds for phase, seconds in self.times.items()}})
        if self.progress is not None:
            self.progress.update(step - self.progress.n)
            score = f"{np.mean(self.recent_returns):.1f}" if self.recent_returns else "-"
            parts = [f"score(100)={score}", *(f"{k}={v}" for k, v in postfix.items()),
                     *(f"{phase}={seconds:.0f}s" for phase, seconds in self.times.items() if seconds)]
            self.progress.set_postfix_str(" ".join(parts), refresh=False)

    def check_finite(self, step: int, value: torch.Tensor | float, what: str = "the loss") -> None:
        """Stop a diverging run in one line (exit status 1) if `value` holds NaN or infinity: the loss, checked
        before the optimizer step so that the weights never hold NaN, or what the network acts on (its
        logits), where a divergence can show first. The last checkpoint stays as it was. (On a GPU it waits
        for `value`.)"""
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            if bool(torch.isfinite(value.detach()).all()):
                return
            shown = "hold NaN or infinity"
        else:
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            if math.isfinite(value):
                return
            shown = f"is {value}"
        self.stop.loop_done = True
        if self.progress is not None:
            self.progress.close()
        where = (f"the last checkpoint ({os.path.join(self.run_dir, 'checkpoint.pt')}, agent step "
                 f"{self.saved_step}) is unchanged" if self.saved_step is not None else "no checkpoint was saved")
        print(f"error: {what} {shown} at agent step {step}: training stopped, {where}; "
              f"try a lower --learning-rate or another --seed", file=sys.stderr)
        with contextlib.suppress(OSError):
            if self.writer is not None:
                self.writer.close()
        sys.exit(1)

    def _decide_stop(self, step: int) -> bool:
        """Whether the run stops after agent step `step`: asked once per step, so that should_stop and
        checkpoint_due agree whatever their order; under torchrun all ranks agree (at the first rank's signal)."""
        if self.decided_step != step:
            self.decided_step = step
            self.stopping = self.proc.any(self.stop.signal is not None)
            if self.stopping and self.stop.signal is None:
                self.stop.signal = signal.SIGTERM  # another rank got it
        return self.stopping

    def should_stop(self, step: int) -> bool:
        """Whether a signal asked the run to stop: the loop ends after this step."""
        return self._decide_stop(step)

    def checkpoint_due(self, step: int, final: bool = False) -> bool:
        """With --save-model: at every --checkpoint-every agent steps, at the end, and when stopping."""
        if not self.args.save_model:
            return False
        return step >= self.next_checkpoint or final or self._decide_stop(step)

    def save_checkpoint(self, step: int, **extra) -> None:
        """checkpoint.pt: the model file plus the optimizer, the step, every rank's random streams and `extra`
        (what else the algorithm needs to continue). Parameters that are no longer finite are never saved."""
        self.next_checkpoint = self._next(step, self.args.checkpoint_every)
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):  # the same on every rank
            self.check_finite(step, torch.tensor(float("nan")), "the network's parameters")
        states = [None] * self.proc.world_size
        if self.proc.world_size > 1:
            dist.all_gather_object(states, rng_states(self.proc.device))
        else:
            states = [rng_states(self.proc.device)]
        self.saved_step = step
        if self.proc.rank != 0:
            return
        # Every tensor on the CPU (the optimizer's state and `extra` live on the device): the checkpoint loads
        # on a machine without the GPU, and load_state_dict puts each tensor back where its parameters are.
        save_atomic(to_cpu(dict(model_file(self.args, self.algo, self.model, self.num_actions),
                                optimizer=self.optimizer.state_dict(), global_step=step, rng=states,
                                run_name=self.run_name, **extra)),
                    os.path.join(self.run_dir, "checkpoint.pt"))

    def evaluate_if_due(self, step: int, act: Callable[[np.ndarray], np.ndarray], final: bool = False) -> None:
        """Every --eval-every agent steps (and at the end): play --eval-episodes whole games with `act`."""
        if self.args.eval_episodes == 0 or self.proc.rank != 0 or step == self.last_eval_step:
            return
        if step < self.next_eval and not final:
            return
        self.next_eval = self._next(step, self.args.eval_every)
        self.last_eval_step = step
        t0 = time.perf_counter()
        video = os.path.join(self.run_dir, "videos", f"eval_{step}.mp4") if self.args.eval_video else None
        scores = evaluate(self.args, act, self.args.eval_episodes, seed=self.args.seed + 10**6 + step,
                          env_threads=self.proc.env_threads, video_path=video)
        self.times["eval"] += time.perf_counter() - t0
        for score in scores:
            self.log(step, {"eval/episodic_return": score})
        message = (f"evaluation at agent step {step}: mean {np.mean(scores):.2f} +- {np.std(scores):.2f} "
                   f"(std) over {len(scores)} games" + (f", video {video}" if video else ""))
        if self.progress is not None:
            self.progress.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def finish(self, step: int, act: Callable[[np.ndarray], np.ndarray], note: str = "") -> None:
        """After the loop: one line with the agent steps, steps/s and seconds per phase (and `note`). A stopped
        run keeps its checkpoint and exits 128 + the signal's number, with the --resume command; a finished
        one saves the final model (with --save-model) and evaluates once more."""
        self.stop.loop_done = True
        if self.progress is not None:
            self.progress.close()
        if self.proc.rank == 0:
            elapsed = time.perf_counter() - self.start_time
            phases = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in self.times.items()
                               if seconds or phase != "eval")
            print(f"{step - self.start_step} agent steps at {(step - self.start_step) / elapsed:.0f} steps/s "
                  f"({phases}{', ' + note if note else ''})", file=sys.stderr)
        missing = (f"no checkpoint at agent step {step}, where the run ends: the training loop must call "
                   f"run.save_checkpoint(step, ...) whenever run.checkpoint_due(step) is True")
        if self.args.save_model and self.saved_step != step and self.stopping and step < self.total_steps:
            raise RuntimeError(missing)
        if self.stopping and step < self.total_steps:
            self.close_events()
            if self.proc.world_size > 1:
                dist.destroy_process_group()
            saved = (f"checkpoint saved; continue with --resume {self.run_dir}" if self.args.save_model
                     else "nothing saved (--no-save-model)")
            if self.proc.rank == 0:  # rank 0 speaks for the job
                print(f"stopped by {signal.Signals(self.stop.signal).name} at agent step {step}: {saved}",
                      file=sys.stderr)
            sys.exit(128 + self.stop.signal)
        if self.args.save_model:
            if self.proc.rank == 0:
                path = os.path.join(self.run_dir, f"{self.exp_name}.model")
                save_atomic(model_file(self.args, self.algo, self.model, self.num_actions), path)
                print(f"model saved to {path}", file=sys.stderr)
            if self.saved_step != step:  # the model is kept; the loop that forgot the checkpoint is the bug
                raise RuntimeError(missing)
        self.evaluate_if_due(step, act, final=True)
        self.close_events()
        if self.proc.world_size > 1:
            dist.destroy_process_group()


# --- playing whole games: evaluation and --run --------------------------------------------------------------

def evaluate(args: RunArgs, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int,
             env_threads: int = 0, video_path: str | None = None) -> list[float]:
    """Raw scores of `episodes` whole games played with `act` (a batch of observations -> actions).

    The games use the training preprocessing (the life-loss and clipped-reward signals are there but only
    the whole game's raw score is read) on up to 8 envs of their own; each env plays a fixed share of the
    games, so short games are not over-represented. Draws come from a stream seeded by `seed`, and the
    training streams are left where they were. With `video_path`, one more game is played and filmed.
    """
    num_envs = min(episodes, 8)
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    envs = wrappers.make_vector_env(args.env_id, num_envs, backend=args.env_backend, num_threads=env_threads,
                                    repeat_action_probability=args.repeat_action_probability)
    played, scores = np.zeros(num_envs, dtype=int), []
    with isolated_rng(seed):
        obs, _ = envs.reset(seed=seed)
        while (played < quota).any():
            obs, _, _, _, info = envs.step(act(obs))
            if "_episode" in info and info["_episode"].any():
                for i in np.flatnonzero(info["_episode"]):
                    if played[i] < quota[i]:
                        scores.append(float(info["episode"]["r"][i]))
                        played[i] += 1
        envs.close()
        if video_path is not None:
            env = replay_env(args.env_id, seed, args.repeat_action_probability)
            play(env, act, 1, video_path, verbose=False, no_video="--no-eval-video")
    return scores


def play(env, act: Callable[[np.ndarray], np.ndarray], games: int, video_path: str | None,
         verbose: bool = True, no_video: str = "--no-video") -> list[float]:
    """Play whole games in `env` (from `replay_env`), close it, and return their raw scores; with `video_path`, write them
    to an mp4: the colour screen doubled beside the agent's 84x84 input at the same height, one video
    frame per agent step (real game speed), the game and its score in the corner. The video is written beside
    its path and renamed over it at the end, so a video that cannot be finished leaves the one before."""
    import cv2

    writer = None
    if video_path is not None:
        scale = 2
        height = 210 * scale
        try:
            os.makedirs(os.path.dirname(video_path) or ".", exist_ok=True)
        except OSError as e:
            fail(f"cannot make the video folder of '{video_path}' ({e.strerror or e}); play with {no_video}")
        partial = video_path[: -len(".mp4")] + ".tmp.mp4"  # OpenCV picks the container by the extension
        writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), 60 / wrappers.FRAME_SKIP,
                                 (160 * scale + height, height))
        if not writer.isOpened():  # OpenCV says no more than this: a full disk or an unwritable folder
            fail(f"cannot write the video '{video_path}' (a full disk, or a folder this user cannot write); "
                 f"free some space, or play with {no_video}")

    def write_frame(obs: np.ndarray, game: int, score: float) -> None:
        screen = cv2.resize(env.render(), (160 * scale, height), interpolation=cv2.INTER_NEAREST)
        agent_view = cv2.resize(obs[-1], (height, height), interpolation=cv2.INTER_NEAREST)
        frame = np.concatenate([cv2.cvtColor(screen, cv2.COLOR_RGB2BGR), cv2.cvtColor(agent_view, cv2.COLOR_GRAY2BGR)], 1)
        cv2.putText(frame, f"game {game}  score {score:g}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
        writer.write(frame)

    scores = []
    for game in range(1, games + 1):
        obs, _ = env.reset()
        score, length, done = 0.0, 0, False
        while not done:
            if writer is not None:
                write_frame(obs, game, score)
            action = int(act(np.asarray(obs)[None])[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            score, length, done = score + float(reward), length + 1, terminated or truncated
        if writer is not None:
            write_frame(obs, game, score)
        scores.append(score)
        if verbose:
            print(f"game {game}: score {score:g} ({length} agent steps)", flush=True)
    env.close()
    if writer is not None:
        writer.release()
        full = os.statvfs(os.path.dirname(partial) or ".").f_bavail == 0
        if full or not os.path.isfile(partial) or not os.path.getsize(partial):  # OpenCV fails silently
            with contextlib.suppress(OSError):
                os.remove(partial)
            fail(f"cannot write the video '{video_path}' (the disk is full?); free some space, or play with "
                 f"{no_video}")
        os.replace(partial, video_path)
    return scores


def replay_env(env_id: str, seed: int, repeat_action_probability: float):
    """One game as the agent sees it in training, but whole: no life loss, no reward clipping, colour frames
    for the video."""
    return wrappers.make_env(env_id, seed, episodic_life=False, clip_reward=False, render_mode="rgb_array",
                             repeat_action_probability=repeat_action_probability)


def random_act(num_actions: int) -> Callable[[np.ndarray], np.ndarray]:
    """A uniformly random policy (draws from NumPy's global stream, which the caller seeds)."""
    return lambda obs: np.random.randint(num_actions, size=len(obs))


def replay(args: RunArgs, proc: Process, algo: str, network: Callable[[int], torch.nn.Module],
           make_act: Callable[[torch.nn.Module], Callable[[np.ndarray], np.ndarray]]) -> None:
    """--run: play whole games with a saved model (or `random`), print each raw score and mean +- std, and
    write the games to videos/<model name>.mp4.

    `network(num_actions)` builds the script's network for the saved weights, `make_act(net)` its acting
    rule. Preprocessing is the training one, without life loss or reward clipping, so a game is a whole
    game and the score is the game's.
    """
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no emulator banner before a one-line error
    if args.run == "random":
        env_id, name = args.env_id, f"random_{wrappers.resolve_game(args.env_id)}"
        env = replay_env(env_id, args.seed, args.repeat_action_probability)
        act = random_act(env.action_space.n)
    else:
        saved = load_file(args.run, "model file", algo, proc.device)
        env_id, name = saved["env_id"], os.path.splitext(os.path.basename(args.run))[0]
        if given_on_command_line("env_id") and wrappers.resolve_game(args.env_id) != wrappers.resolve_game(env_id):
            fail(f"model '{args.run}' was trained on {env_id}, not {args.env_id}; drop --env-id or pick its model")
        try:
            env = replay_env(env_id, args.seed, args.repeat_action_probability)
        except wrappers.EnvIdError as e:
            fail(f"model '{args.run}': {e}")
        if env.action_space.n != saved["num_actions"]:
            fail(f"model '{args.run}' has {saved['num_actions']} actions but {env_id} has {env.action_space.n}")
        net = network(saved["num_actions"]).to(proc.device)
        try:
            net.load_state_dict(saved["model"])
        except RuntimeError:
            fail(f"model '{args.run}' does not fit the network of {algo}_atari.py (different layer shapes)")
        net.eval()
        act = make_act(net)
    video_path = None
    if args.video:
        video_path = os.path.join("videos", name + ".mp4")
    scores = play(env, act, args.run_episodes, video_path)
    print(f"mean {np.mean(scores):.2f} +- {np.std(scores):.2f} (std) over {len(scores)} games of {env_id}")
    if video_path is not None:
        print(f"video: {video_path}")
