"""One speed table for our scripts and every env backend, beside real peers and this machine's ceiling.

Everything is measured in one run, because a figure from another run, another day or another machine is
not comparable: a short run's speed on these VMs moves by a third from one run to the next, so compare
only figures taken in one run, on one machine. What it measures, in order:

  1. The machine: CPU, cores, torch, whether bf16 is native (`harness.native_bf16()`).
  2. The ceiling: torch's GEMM rate here (2048 x 2048, fp32 and bf16), and one bare training step of
     the Nature CNN (forward, backward, optimizer step) at each script's update batch, with the script's
     own network class and default speed settings (channels-last, fused Adam, bf16 autocast where
     native): PPO batch 256 (Adam), DQN batch 32 (target forward on s', online forward and backward on
     s, Adam), A2C batch 80 (RMSprop in TensorFlow's form). From the hand-counted arithmetic of the
     network (`update_flops`) it gives the GFLOP/s of the update, and the most agent steps/s the update
     alone allows at each script's defaults (PPO 16 steps of 256 per 1,024 agent steps, DQN one step of
     32 per 4, A2C one step of 80 per 80): the update-only ceiling. The same step in the other precision
     (fp32 where the default is bf16, and the reverse) shows where the default precision is the slower one.
  3. Bare costs of the rollout: the forward pass that picks the actions (batch 8 sampled for PPO, 1
     argmax for DQN, 16 sampled for A2C) in a tight loop, and random-action steps of
     `wrappers.make_vector_env` on each backend (native, sync, async) at each script's number of envs.
     Env + forward + update, each at its bare cost, is the serial ceiling: what the loop would reach if
     it added nothing to its parts.
  4. Our scripts at their defaults, each a subprocess (`--eval-episodes 0 --no-progress`, DQN also
     `--learning-starts 1000 --buffer-size 100000`), read from their TensorBoard events: agent steps/s
     and the seconds of each phase (time/env, time/inference, time/replay, time/update, cumulative) per
     1,024 agent steps, over the window from the first logged point after a warm-up (PPO: its first
     update; DQN: 1,000 agent steps after learning starts; A2C: 1,000 agent steps) to the last
     (benchmark/timing.py, which the studies of benchmark/studies/ share). Each phase beside its bare
     cost; overhead = loop / bare - 1.
  5. Peers on the same workload, in the same run: CleanRL's own ppo_atari.py and dqn_atari.py (`--cleanrl
     DIR`, in a venv with the versions it pins, read from its charts/SPS events the same way), and
     Stable-Baselines3 2.9.2's A2C, PPO and DQN at the rl-zoo Atari settings (benchmark/sb3_speed.py,
     in a venv from benchmark/requirements-peers.txt). Both venvs are built under the system's
     temporary folder unless --cleanrl-python / --sb3-python name ready ones.
  6. The table: per script, ours beside each peer, and as a fraction of both ceilings.

`--ref GITREV` also times our scripts as committed at GITREV (a temporary `git worktree`), interleaved
with the working tree's, for a before/after claim measured in one run. `--repeat K` interleaves K rounds
of everything and reports each round and the median. `--pause PID ...` stops other processes (SIGSTOP; the
processes named, not their children) for the whole measurement and always resumes them (SIGCONT), also
on an error, Ctrl-C or SIGTERM; a SIGKILL of this process is the one case it cannot handle. Each
measurement also records the cores that processes other than ours used meanwhile, so a disturbed figure
shows as one.

Usage (each full round takes about 20 minutes on 2 cores; stop other work, or pause it):
    python benchmark/throughput.py --cleanrl PATH/TO/cleanrl --repeat 2 --out benchmark/results/throughput.md
    python benchmark/throughput.py --only ours --scripts ppo --ref HEAD~1 --repeat 3   # before/after a change
    python benchmark/throughput.py --only ceiling,env --bare-seconds 1                 # this machine alone
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from timing import DQN_FLAGS, LEARNING_STARTS, PER, loop_figures, read_points, workload_flags

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("ppo", "dqn", "a2c", "pqn")
SECTIONS = ("ours", "peers", "ceiling", "env")
NUM_ACTIONS = 4  # Breakout's minimal action set, the scripts' default game
DEFAULT_STEPS = {"ppo": 16_384, "dqn": 20_000, "a2c": 40_000, "pqn": 16_384}  # agent steps of one run of each script

# The environment CleanRL at CLEANRL_COMMIT pins (its requirements; it cannot run on gymnasium 1.x, CleanRL
# issue #499), installed after the torch of our requirements.txt.
CLEANRL_COMMIT = "fe8d8a0"
CLEANRL_PINS = ["gymnasium==0.29.1", "ale-py==0.9.1", "tyro==0.8.14", "numpy<2", "tensorboard",
                "opencv-python-headless", "tenacity", "stable-baselines3==2.3.2"]
SB3_REQUIREMENTS = ROOT / "benchmark" / "requirements-peers.txt"
PEER_VENVS = Path(tempfile.gettempdir()) / "rl-throughput-peers"  # the peers' venvs, each built once
# CleanRL's scripts need ale_py and gymnasium imported to find the Atari ids; then the script runs as
# __main__ with its own command line (`python -c RUNNER script.py --flag ...`).
CLEANRL_RUNNER = ("import sys, runpy, ale_py, gymnasium; sys.argv = sys.argv[1:]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")


class UsageError(Exception):
    """A user's mistake: one line, exit status 2."""


# --- what each script does per cycle of its loop ------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One script's loop at its defaults, counted per cycle: the agent steps between two updates."""

    script: str
    num_envs: int
    steps_per_cycle: int  # agent steps (all envs together) per cycle
    forwards_per_cycle: float  # rollout forward passes of num_envs observations per cycle
    updates_per_cycle: int  # optimizer steps per cycle
    update_batch: int  # observations per optimizer step
    target_forward: bool  # the update also runs a target network on s' (DQN)
    value_head: bool  # actor-critic: a policy head and a value head on the 512 features
    warmup: int  # agent steps before the measured window
    log_every: int  # agent steps between the script's logged points


def workload(script: str, args) -> Workload:
    """The Workload of `script` from its Args (any object with the fields read here).

    PPO: num_steps forwards of num_envs per rollout plus one for the last value; update_epochs x
    num_minibatches steps of num_envs x num_steps / num_minibatches. DQN: one forward of num_envs per
    num_envs agent steps, one update of batch_size per train_frequency agent steps. A2C: num_steps + 1
    forwards per rollout, one update on the whole rollout. PQN: PPO's shape, with a Q-network (no value head).
    """
    if script in ("ppo", "pqn"):
        rollout = args.num_envs * args.num_steps
        return Workload(script, args.num_envs, rollout, args.num_steps + 1, args.update_epochs * args.num_minibatches,
                        rollout // args.num_minibatches, False, script == "ppo", warmup=rollout, log_every=rollout)
    if script == "dqn":
        return Workload("dqn", args.num_envs, args.train_frequency, args.train_frequency / args.num_envs, 1,
                        args.batch_size, True, False, warmup=LEARNING_STARTS + 1_000, log_every=1_000)
    if script == "a2c":
        rollout = args.num_envs * args.num_steps
        return Workload("a2c", args.num_envs, rollout, args.num_steps + 1, 1, rollout, False, True,
                        warmup=1_000, log_every=getattr(args, "log_every", 1_000))
    raise ValueError(f"unknown script '{script}'")


def min_steps(w: Workload) -> int:
    """The shortest run with a measured window: the warm-up and one more logged interval after it."""
    return w.warmup + max(w.log_every, w.steps_per_cycle)


# --- arithmetic: FLOPs, ceilings, ratios --------------------------------------------------------------------------

def nature_cnn_macs(num_actions: int, value_head: bool = False, frame: int = 84, stack: int = 4) -> list[int]:
    """Multiply-adds per observation of each weighted layer of the Nature CNN (Mnih et al. 2015), in order:
    conv 8x8/4 to 32 channels, conv 4x4/2 to 64, conv 3x3/1 to 64, linear to 512, and the head(s):
    num_actions outputs (+ 1 for a value head). A conv's are its output positions x channels x
    (input channels x kernel area); a linear layer's are inputs x outputs."""
    macs, size, channels = [], frame, stack
    for out_channels, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        size = (size - kernel) // stride + 1
        macs.append(size * size * out_channels * channels * kernel * kernel)
        channels = out_channels
    macs.append(channels * size * size * 512)
    macs.append(512 * (num_actions + int(value_head)))
    return macs


def forward_flops(batch: int, num_actions: int, value_head: bool = False) -> float:
    """FLOPs (2 per multiply-add) of one forward pass of `batch` observations."""
    return 2.0 * batch * sum(nature_cnn_macs(num_actions, value_head))


def update_flops(batch: int, num_actions: int, value_head: bool = False, target_forward: bool = False) -> float:
    """FLOPs (2 per multiply-add) of one optimizer step on `batch` observations: the forward, the backward
    (the weight gradients of every layer, as many multiply-adds as its forward, and the input gradients of
    every layer but the first: the frames need none) and, for DQN, the target network's forward on s'.
    Biases, activations, the loss and the optimizer are left out (under 1% of the total)."""
    layers = nature_cnn_macs(num_actions, value_head)
    forward = sum(layers)
    backward = forward + (forward - layers[0])
    return 2.0 * batch * (forward + backward + (forward if target_forward else 0))


def gemm_flops(n: int) -> float:
    """FLOPs of an n x n by n x n matrix product."""
    return 2.0 * n**3


def gflops_per_second(flops: float | None, seconds: float | None) -> float | None:
    return None if flops is None or not seconds else flops / seconds / 1e9


def update_ceiling(w: Workload, update_seconds: float | None) -> float | None:
    """The most agent steps/s the update alone allows: a cycle's agent steps / its updates' time."""
    return None if not update_seconds else w.steps_per_cycle / (w.updates_per_cycle * update_seconds)


def bare_seconds(w: Workload, env_sps: float | None, forward_seconds: float | None,
                 update_seconds: float | None, per: int = PER) -> dict[str, float]:
    """Seconds per `per` agent steps of each phase done bare: env steps at `env_sps` agent steps/s, the
    rollout's forward passes, the updates. A phase without a measurement is left out."""
    cycles = per / w.steps_per_cycle
    out = {}
    if env_sps:
        out["env"] = per / env_sps
    if forward_seconds is not None:
        out["inference"] = cycles * w.forwards_per_cycle * forward_seconds
    if update_seconds is not None:
        out["update"] = cycles * w.updates_per_cycle * update_seconds
    return out


def serial_ceiling(bare: dict[str, float], per: int = PER) -> float | None:
    """Agent steps/s of a loop that does its phases one after another at their bare cost, adding nothing;
    None unless env, inference and update are all known."""
    if not {"env", "inference", "update"} <= bare.keys():
        return None
    return per / sum(bare[p] for p in ("env", "inference", "update"))


def overhead(loop: float | None, bare: float | None) -> float | None:
    """How much more time a phase takes in the loop than bare: loop / bare - 1 (0.25 = 25% more)."""
    return None if loop is None or not bare else loop / bare - 1.0


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def median(values) -> float | None:
    """Median of the values that are not None (None when there are none)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def median_phases(runs: list[dict]) -> dict[str, float]:
    """Per phase, the median over runs of its seconds per 1,024 agent steps."""
    names = [p for r in runs for p in r.get("phases", {})]
    return {p: median(r["phases"].get(p) for r in runs if "phases" in r) for p in dict.fromkeys(names)}


# --- command line helpers -----------------------------------------------------------------------------------------

def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """'a,b' -> ['a', 'b'], each checked against `allowed` (UsageError names the bad one)."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    for item in items:
        if item not in allowed:
            raise UsageError(f"unknown {what} '{item}': choose from {', '.join(allowed)}")
    if not items:
        raise UsageError(f"no {what} given: choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_steps(text: str | None, scripts: list[str]) -> dict[str, int]:
    """--steps: None (the defaults), N (every script), or 'ppo=N,dqn=M' (the others keep their default)."""
    steps = {s: DEFAULT_STEPS[s] for s in scripts}
    if text is None:
        return steps
    try:
        if "=" not in text:
            return {s: int(text) for s in scripts}
        for part in text.split(","):
            name, value = (x.strip() for x in part.split("="))
            if name not in SCRIPTS:
                raise UsageError(f"unknown script '{name}' in --steps: choose from {', '.join(SCRIPTS)}")
            steps[name] = int(value)
    except ValueError:
        raise UsageError(f"--steps '{text}' is neither a number nor a list like ppo=16384,dqn=20000") from None
    return {s: steps[s] for s in scripts}


def has_flag(help_text: str, flag: str) -> bool:
    """Whether a script's --help lists `flag` (in the --with-hyphens or --with_underscores spelling)."""
    names = set(re.findall(r"--[A-Za-z0-9][A-Za-z0-9_-]*", help_text))
    return flag in names or flag.replace("-", "_").replace("__", "--", 1) in names


def our_flags(help_text: str, script: str, steps: int, runs_dir: str, run_name: str) -> list[str]:
    """The command line of one of our scripts for a timed run, with only the flags its --help lists (a
    script from an older commit may lack --eval-episodes or --no-progress)."""
    flags = ["--total-timesteps", str(steps)]
    for flag, values in (("--eval-episodes", ["0"]), ("--no-progress", []), ("--runs-dir", [runs_dir]),
                         ("--run-name", [run_name])):
        if has_flag(help_text, flag):
            flags += [flag, *values]
    return flags + workload_flags(script)


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_overhead(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.0f}%"


# --- the machine and other processes ------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (/proc/stat), None where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class OthersLoad:
    """`with OthersLoad() as load:` ... `load.cores`: the cores that processes other than this one and its
    children used during the block (0.05 = quiet; 1.0 = one of our cores was taken)."""

    def __enter__(self):
        self.busy, self.own, self.start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        self.cores = None
        return self

    def __exit__(self, *exc):
        busy = busy_cpu_seconds()
        if busy is not None and self.busy is not None:
            others = (busy - self.busy) - (own_cpu_seconds() - self.own)
            self.cores = max(others, 0.0) / max(time.perf_counter() - self.start, 1e-9)


def ancestors() -> set[int]:
    """This process and its ancestors: pausing any of them would freeze the benchmark."""
    ours, pid = set(), os.getpid()
    while pid > 1:
        ours.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return ours


def check_pause(pids: list[int]) -> None:
    ours = ancestors()
    for pid in pids:
        if pid in ours or pid <= 1:
            raise UsageError(f"--pause {pid} is this benchmark or one of its parents: pausing it would freeze the run")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise UsageError(f"--pause {pid}: no such process") from None
        except PermissionError:
            raise UsageError(f"--pause {pid}: not allowed to signal that process") from None


@contextlib.contextmanager
def paused(pids: list[int]):
    """SIGSTOP `pids` for the block, and SIGCONT them after it, whatever ends it."""
    stopped = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        if stopped:
            say(f"paused {', '.join(map(str, stopped))} (SIGSTOP) until the measurement ends")
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if stopped:
            say(f"resumed {', '.join(map(str, stopped))}")


def say(message: str) -> None:
    """Progress, on stderr as it happens; the report goes to stdout at the end."""
    print(message, file=sys.stderr, flush=True)


# --- bare costs, in this process ----------------------------------------------------------------------------------

def best_seconds(fn, seconds: float, rounds: int = 3) -> float:
    """Seconds per call of `fn`: the best of `rounds` rounds of calls that together take about `seconds`
    (the first call warms up: oneDNN picks its kernels, caches fill)."""
    fn()
    start = time.perf_counter()
    fn()
    per_call = time.perf_counter() - start
    calls = max(1, round(seconds / rounds / max(per_call, 1e-6)))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


@functools.lru_cache(maxsize=None)
def script_module(script: str):
    """The script's module from the working tree (importing it only defines things), None if it fails."""
    import importlib

    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"{script}_atari")
    except Exception as e:  # a script being written may not import yet
        say(f"note: {script}_atari.py does not import ({type(e).__name__}: {e})")
        return None


def script_args(script: str):
    """The script's default Args, or for an A2C that does not import, the defaults it documents."""
    module = script_module(script)
    if module is not None:
        return module.Args()
    if script == "a2c":
        from types import SimpleNamespace

        return SimpleNamespace(num_envs=16, num_steps=5, log_every=1_000, channels_last=True, bf16=None,
                               fused_adam=True, flush_denormal=True, env_backend="native")
    raise UsageError(f"{script}_atari.py does not import: fix it or leave it out of --scripts")


def bare_update(script: str, w: Workload, bf16: bool | None = None):
    """One optimizer step as the script's update does it, on fixed random frames, with the script's network,
    optimizer and default speed settings (bf16 autocast or not: `bf16`, None for the script's default):
    (the step as a function, what it is, a note or ""). The loss is a stand-in (a few elementwise ops): what
    is timed is the network's forward and backward and the optimizer."""
    import torch
    import torch.nn.functional as F

    import harness

    module, args = script_module(script), script_args(script)
    if bf16 is None:
        bf16 = harness.native_bf16() if args.bf16 is None else args.bf16
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    torch.manual_seed(0)
    b = w.update_batch
    note = ""
    if script == "dqn":
        q = module.QNetwork(NUM_ACTIONS, channels_last=args.channels_last)
        target = module.QNetwork(NUM_ACTIONS, channels_last=args.channels_last)
        optimizer = torch.optim.Adam(q.parameters(), lr=1e-4, fused=args.fused_adam or None)
        frames = torch.randint(0, 256, (b, 5, 84, 84), dtype=torch.uint8)  # s = frames 0-3, s' = frames 1-4
        actions, rewards = torch.randint(0, NUM_ACTIONS, (b, 1)), torch.zeros(b)

        def step():
            with torch.no_grad(), autocast:
                next_q = target(frames[:, 1:])
            targets = rewards + 0.99 * next_q.max(dim=1).values
            with autocast:
                q_taken = q(frames[:, :-1]).gather(1, actions).squeeze(1)
            loss = F.mse_loss(q_taken, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        what = "Adam" + (" (fused)" if args.fused_adam else "")
    elif script == "pqn":
        q = module.QNetwork(NUM_ACTIONS, channels_last=args.channels_last)
        optimizer, what = torch.optim.RAdam(q.parameters(), lr=2.5e-4), "RAdam"
        frames = torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8)
        actions, returns = torch.randint(0, NUM_ACTIONS, (b, 1)), torch.zeros(b)

        def step():
            with autocast:
                q_taken = q(frames).gather(1, actions).squeeze(1)
            loss = F.mse_loss(q_taken, returns)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        network = module.Agent if module is not None else script_module("ppo").Agent
        agent = network(NUM_ACTIONS, channels_last=args.channels_last)
        if script == "ppo":
            optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5, fused=args.fused_adam or None)
            what = "Adam" + (" (fused)" if args.fused_adam else "")
        elif module is not None and hasattr(module, "RMSpropTF"):
            optimizer, what = module.RMSpropTF(agent.parameters(), lr=7e-4, alpha=0.99, eps=1e-5), "RMSpropTF"
        else:
            optimizer = torch.optim.RMSprop(agent.parameters(), lr=7e-4, alpha=0.99, eps=1e-5)
            what = "torch RMSprop"
            note = "a2c_atari.py's optimizer does not import: torch.optim.RMSprop stands in for it"
        frames = torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8)

        def step():
            with autocast:
                logits, values = agent(frames)
            loss = logits.logsumexp(dim=1).mean() + values.square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    layout = "channels-last" if args.channels_last else "contiguous"
    return step, f"batch {b}, {what}, {'bf16 autocast' if bf16 else 'fp32'}, {layout}", note


def bare_forward(script: str, w: Workload):
    """The rollout's forward pass on num_envs observations, as the script acts: sampled from the policy
    (PPO, A2C) or the argmax of Q (DQN), from a NumPy batch to NumPy actions, in inference mode."""
    import numpy as np
    import torch
    from torch.distributions.categorical import Categorical

    import harness

    module, args = script_module(script), script_args(script)
    bf16 = harness.native_bf16() if args.bf16 is None else args.bf16
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    obs = np.random.default_rng(0).integers(0, 256, (w.num_envs, 4, 84, 84), dtype=np.uint8)
    torch.manual_seed(0)
    if script == "dqn":
        q = module.QNetwork(NUM_ACTIONS, channels_last=args.channels_last).eval()

        def act():  # the script's own acting, greedy (it computes Q in fp32 whatever --bf16 says)
            return module.epsilon_greedy(q, obs, 0.0, NUM_ACTIONS, torch.device("cpu"))

        return act, f"batch {w.num_envs}, argmax Q"
    if script == "pqn":
        q = module.QNetwork(NUM_ACTIONS, channels_last=args.channels_last).eval()

        def act():  # the script's own acting rule, greedy
            with torch.inference_mode(), autocast:
                return module.epsilon_greedy(q(torch.from_numpy(obs)), 0.0).numpy()

        return act, f"batch {w.num_envs}, argmax Q"
    network = module.Agent if module is not None else script_module("ppo").Agent
    agent = network(NUM_ACTIONS, channels_last=args.channels_last).eval()

    def act():
        with torch.inference_mode(), autocast:
            logits, _ = agent(torch.from_numpy(obs))
            return Categorical(logits=logits, validate_args=False).sample().numpy()

    return act, f"batch {w.num_envs}, sampled"


@contextlib.contextmanager
def quiet_children():
    """Processes started in the block write their stderr to /dev/null: each async env worker would print
    the emulator's banner into the progress lines. (An error in a worker still reaches us through its pipe.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def env_steps_per_second(env_id: str, backend: str, num_envs: int, seconds: float, windows: int = 3) -> float:
    """Agent steps/s of `wrappers.make_vector_env` with random actions: the best of `windows` windows
    after a warm-up of 50 steps (the first games start, async workers come up)."""
    import numpy as np

    import wrappers

    with quiet_children():
        envs = wrappers.make_vector_env(env_id, num_envs, backend=backend, num_threads=min(num_envs, cores()))
    try:
        envs.reset(seed=1)
        actions = np.random.default_rng(1).integers(0, envs.single_action_space.n, (256, num_envs))
        for i in range(50):
            envs.step(actions[i])
        best, n = 0.0, 0
        for _ in range(windows):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / windows:
                for _ in range(16):
                    envs.step(actions[n % 256])
                    n += 1
                count += 16
            best = max(best, count * num_envs / (time.perf_counter() - start))
        return best
    finally:
        envs.close()


# --- whole runs, as subprocesses ----------------------------------------------------------------------------------

def run_process(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[bool, str, float, float | None]:
    """Run `cmd` with its output in cwd/output.log: (ok, the output's last line or the failure, wall seconds,
    cores other processes used meanwhile)."""
    log = cwd / "output.log"
    start = time.perf_counter()
    with OthersLoad() as load, open(log, "w") as out:
        try:
            result = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            ok, why = result.returncode == 0, f"exit status {result.returncode}"
        except subprocess.TimeoutExpired:
            ok, why = False, f"not finished after {timeout:.0f} s"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return ok, (lines[-1] if ok and lines else f"{why}: {lines[-1] if lines else 'no output'}"), \
        time.perf_counter() - start, load.cores


def shown(cmd: list[str]) -> str:
    """A command line to print: files by their names, CleanRL's runner as <runner>."""
    return " ".join("<runner>" if c == CLEANRL_RUNNER else Path(c).name if os.path.isfile(c) else c for c in cmd)


def timed_run(label: str, cmd: list[str], cwd: Path, env: dict, timeout: float, warmup: int,
              from_events: bool = True) -> dict:
    """One whole run: its figures over the window after `warmup` (from its TensorBoard events, or with
    from_events False from the JSON line sb3_speed.py prints last)."""
    say(f"  {label}: {shown(cmd)}")
    ok, last_line, wall, others = run_process(cmd, cwd, env, timeout)
    result = dict(wall=wall, others=others)
    if not ok:
        result["error"] = last_line
    elif from_events:
        figures = loop_figures(read_points(cwd), warmup)
        if figures is None:
            result["error"] = f"no window after {warmup} agent steps in its charts/SPS events (more --steps?)"
        else:
            result.update(figures)
    else:
        try:
            result.update(sps=json.loads(last_line)["sps"], sps_whole=json.loads(last_line)["sps_whole"])
        except (ValueError, KeyError):
            result["error"] = f"no JSON result: {last_line}"
    if "error" in result:
        say(f"  {label}: failed: {result['error']} (log: {cwd / 'output.log'})")
    else:
        say(f"  {label}: {result['sps']:.0f} agent steps/s after warm-up ({fmt(result.get('sps_whole'))} over the "
            f"whole run), {wall:.0f} s, other processes {fmt(others, 2)} cores")
    return result


def script_help(python: str, path: Path) -> str:
    result = subprocess.run([python, str(path), "--help"], capture_output=True, text=True, cwd=path.parent,
                            env=dict(os.environ, COLUMNS="200"))
    return result.stdout + result.stderr


# --- peer environments --------------------------------------------------------------------------------------------

def torch_requirement() -> str:
    """The torch line of requirements.txt: every venv here gets the torch that ours runs on."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if re.match(r"torch\s*[=<>~!]", line):
            return line.split("#", 1)[0].strip()
    return "torch"


def build_venv(path: Path, requirements: list[str], fingerprint: str, log: Path) -> str:
    """A virtual environment at `path` with torch installed first (on a machine without a GPU the package
    index may serve a CPU build of it) and then `requirements` (pip arguments); reused when a build with
    the same `fingerprint` (the text of what it installs) finished there before. Returns its python."""
    python, marker = path / "bin" / "python", path / "throughput-build.txt"
    if python.exists() and marker.exists() and marker.read_text() == fingerprint:
        return str(python)
    say(f"building {path} (once; pip's output goes to {log})")
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        for cmd in ([sys.executable, "-m", "venv", str(path)],
                    [str(python), "-m", "pip", "install", torch_requirement()],
                    [str(python), "-m", "pip", "install", *requirements]):
            out.write(f"\n$ {' '.join(cmd)}\n")
            out.flush()
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise RuntimeError(f"building {path} failed at `{' '.join(cmd[2:])}`: see {log}")
    marker.write_text(fingerprint)
    return str(python)


def cleanrl_venv() -> str:
    """The python of CleanRL's pinned venv under PEER_VENVS, built there once (benchmark/cleanrl_run.py uses
    it too)."""
    return build_venv(PEER_VENVS / "cleanrl-venv", CLEANRL_PINS, "\n".join([torch_requirement(), *CLEANRL_PINS]),
                      PEER_VENVS / "build.log")


def peer_pythons(setup: Setup, cleanrl_python: str | None, sb3_python: str | None) -> None:
    """The Pythons of the peers: those given, else venvs built (once) under PEER_VENVS."""
    if setup.cleanrl is None:
        setup.notes.append("CleanRL not run: give --cleanrl DIR (the folder holding cleanrl/ and cleanrl_utils/)")
    else:
        setup.cleanrl_python = cleanrl_python or cleanrl_venv()
    fingerprint = "\n".join([torch_requirement(), SB3_REQUIREMENTS.read_text(),
                             (ROOT / "requirements.txt").read_text()])
    setup.sb3_python = sb3_python or build_venv(PEER_VENVS / "sb3-venv", ["-r", str(SB3_REQUIREMENTS)], fingerprint,
                                                PEER_VENVS / "build.log")


# --- the measurements of one round --------------------------------------------------------------------------------

@dataclass
class Setup:
    scripts: list[str]
    sections: list[str]
    steps: dict[str, int]
    workloads: dict[str, Workload]
    env_id: str
    bare_seconds: float
    timeout: float
    tmp: Path
    cleanrl: Path | None = None
    cleanrl_python: str | None = None
    sb3_python: str | None = None
    ref: str | None = None
    ref_tree: Path | None = None
    ref_help: dict = field(default_factory=dict)  # script path -> its --help text
    help: dict = field(default_factory=dict)
    peer_env: dict = field(default_factory=dict)  # the environment the peers run in
    env_backends: dict = field(default_factory=dict)  # script -> its default env backend
    update_what: dict = field(default_factory=dict)  # script -> what its bare update is
    other_precision: dict = field(default_factory=dict)  # script -> the precision its default does not use
    forward_what: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


class Results:
    """Every measurement, by round: key -> list of values (one per round)."""

    def __init__(self):
        self.data: dict = {}
        self.rows: list = []  # (round, label, value, unit, others' cores)

    def add(self, key: tuple, value, round_: int, label: str, unit: str, others: float | None = None) -> None:
        """`value`: a number in `unit`, or a whole run's dict (sps, sps_whole, wall, phases, or error)."""
        self.data.setdefault(key, []).append(value)
        self.rows.append((round_, label, value, unit, others))

    def env_backends(self) -> list[str]:
        """The env backends measured, in the order they were."""
        return list(dict.fromkeys(key[1] for key in self.data if key[0] == "env"))

    def get(self, key: tuple) -> list:
        return self.data.get(key, [])

    def median(self, key: tuple) -> float | None:
        return median(v.get("sps") if isinstance(v, dict) else v for v in self.get(key))


def measure_ceiling(setup: Setup, results: Results, round_: int, bare_fns: dict) -> None:
    import torch

    say("ceiling: GEMM and bare training steps")
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for precision, (x, y) in (("fp32", (a, b)), ("bf16", (a.bfloat16(), b.bfloat16()))):
        with OthersLoad() as load:
            seconds = best_seconds(lambda: torch.mm(x, y), setup.bare_seconds)
        gflops = gemm_flops(2048) / seconds / 1e9
        results.add(("gemm", precision), gflops, round_, f"GEMM 2048x2048 {precision}", "GFLOP/s", load.cores)
        say(f"  GEMM {precision}: {gflops:.0f} GFLOP/s")
    for script in setup.scripts:
        for kind in ("update", "update_other_precision", "forward"):
            label = f"{script} bare {kind.replace('_', ' ')}"
            if kind == "update_other_precision":
                label += f" ({setup.other_precision[script]})"
            with OthersLoad() as load:
                seconds = best_seconds(bare_fns[(kind, script)], setup.bare_seconds)
            results.add((kind, script), seconds, round_, label, "s", load.cores)
            say(f"  {label}: {1000 * seconds:.2f} ms")


def measure_env(setup: Setup, results: Results, round_: int) -> None:
    import wrappers

    say("env backends: random actions")
    for n in sorted({setup.workloads[s].num_envs for s in setup.scripts}):
        for backend in wrappers.BACKENDS:
            with OthersLoad() as load:
                sps = env_steps_per_second(setup.env_id, backend, n, setup.bare_seconds)
            label = f"env {backend}, {n} env{'s' if n > 1 else ''}"
            results.add(("env", backend, n), sps, round_, label, "agent steps/s", load.cores)
            say(f"  {label}: {sps:,.0f} agent steps/s")


def measure_runs(setup: Setup, results: Results, round_: int, script: str) -> None:
    w, steps = setup.workloads[script], setup.steps[script]
    say(f"{script}: whole runs of {steps:,} agent steps")
    who = []
    if "ours" in setup.sections:
        who.append(("ours", ROOT / f"{script}_atari.py", setup.help))
        if setup.ref_tree is not None:
            who.append(("ref", setup.ref_tree / f"{script}_atari.py", setup.ref_help))
    for name, path, helps in who:
        if not path.exists():
            continue
        cwd = Path(tempfile.mkdtemp(prefix=f"{script}-{name}-", dir=setup.tmp))
        if path not in helps:
            helps[path] = script_help(sys.executable, path)
        cmd = [sys.executable, str(path), *our_flags(helps[path], script, steps, str(cwd / "runs"), f"{script}_{name}")]
        label = f"{script} ours" if name == "ours" else f"{script} ours at {setup.ref}"
        result = timed_run(label, cmd, cwd, dict(os.environ), setup.timeout, w.warmup)
        results.add(("run", script, name), result, round_, label, "agent steps/s", result["others"])
    if "peers" not in setup.sections:
        return
    if setup.cleanrl_python and (setup.cleanrl / "cleanrl" / f"{script}_atari.py").exists():
        cwd = Path(tempfile.mkdtemp(prefix=f"{script}-cleanrl-", dir=setup.tmp))
        env = dict(setup.peer_env, PYTHONPATH=os.pathsep.join(
            [str(setup.cleanrl)] + ([setup.peer_env["PYTHONPATH"]] if setup.peer_env.get("PYTHONPATH") else [])))
        cmd = [setup.cleanrl_python, "-c", CLEANRL_RUNNER, str(setup.cleanrl / "cleanrl" / f"{script}_atari.py"),
               "--total-timesteps", str(steps), *workload_flags(script)]
        result = timed_run(f"{script} CleanRL", cmd, cwd, env, setup.timeout, w.warmup)
        results.add(("run", script, "cleanrl"), result, round_, f"{script} CleanRL", "agent steps/s", result["others"])
    if setup.sb3_python:
        cwd = Path(tempfile.mkdtemp(prefix=f"{script}-sb3-", dir=setup.tmp))
        cmd = [setup.sb3_python, str(ROOT / "benchmark" / "sb3_speed.py"), "--algo", script, "--steps", str(steps),
               "--warmup", str(w.warmup), "--learning-starts", str(LEARNING_STARTS), "--env-id", setup.env_id]
        env = dict(setup.peer_env, SB3_LOGDIR=str(cwd))  # else SB3 leaves an empty log folder in the temp folder
        result = timed_run(f"{script} SB3", cmd, cwd, env, setup.timeout, w.warmup, from_events=False)
        results.add(("run", script, "sb3"), result, round_, f"{script} SB3", "agent steps/s", result["others"])


# --- the report ---------------------------------------------------------------------------------------------------

def table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def script_figures(setup: Setup, results: Results, script: str) -> dict:
    """The medians behind one script's rows: bare costs, ceilings, and each run's steps/s and phases."""
    w = setup.workloads[script]
    update_s, forward_s = median(results.get(("update", script))), median(results.get(("forward", script)))
    env_sps = median(results.get(("env", setup.env_backends[script], w.num_envs)))
    bare = bare_seconds(w, env_sps, forward_s, update_s)
    runs = {}
    for who in ("ours", "ref", "cleanrl", "sb3"):
        ok = [r for r in results.get(("run", script, who)) if "error" not in r]
        if ok:
            runs[who] = dict(sps=median(r["sps"] for r in ok), sps_whole=median(r.get("sps_whole") for r in ok),
                             phases=median_phases(ok), rounds=len(ok))
    flops = update_flops(w.update_batch, NUM_ACTIONS, w.value_head, w.target_forward)
    return dict(update_s=update_s, forward_s=forward_s, env_sps=env_sps, bare=bare, runs=runs, flops=flops,
                update_ceiling=update_ceiling(w, update_s), serial_ceiling=serial_ceiling(bare))


def report(setup: Setup, results: Results, meta: dict) -> list[str]:
    """The report as markdown lines: the machine, then each section whose measurements were made (--only),
    the table, and every measurement by round."""
    figures = {s: script_figures(setup, results, s) for s in setup.scripts}
    lines = machine_section(setup, meta)
    if "ceiling" in setup.sections:
        lines += ceiling_section(setup, results, figures)
    if "ceiling" in setup.sections or "env" in setup.sections:
        lines += rollout_section(setup, results, figures, meta["env_id"])
    if "ours" in setup.sections:
        lines += loops_section(setup, figures)
    return lines + table_section(setup, results, figures) + rounds_section(results)


def machine_section(setup: Setup, meta: dict) -> list[str]:
    lines = [f"# Throughput on {meta['env_id']}: our scripts, env backends, peers and this machine's ceiling", "",
             f"{meta['date']}; `{meta['command']}`", "",
             "## Machine", "",
             f"- CPU: {meta['cpu']}, {meta['cores']} cores available to this process; torch {meta['torch']} "
             f"({meta['cores']} threads, as the scripts use); bf16 native: {'yes' if meta['bf16'] else 'no'} "
             f"(`harness.native_bf16()`); Python {platform.python_version()}",
             f"- load average (1, 5, 15 min) at the start: {meta['load_before']}, at the end: {meta['load_after']}",
             f"- paused during the measurement: {meta['paused'] or 'nothing'}",
             f"- {meta['rounds']} round(s), interleaved; every figure below is the median over the rounds (each "
             f"round's figures are in the last section)", ""]
    return lines + [f"- note: {n}" for n in setup.notes] + ([""] if setup.notes else [])


def ceiling_section(setup: Setup, results: Results, figures: dict) -> list[str]:
    """GEMM, and each script's bare update beside the same update in its loop."""
    fp32, bf16 = results.median(("gemm", "fp32")), results.median(("gemm", "bf16"))
    lines = ["## Ceiling: this machine's arithmetic", "",
             f"torch.mm of two 2048 x 2048 matrices, best of 3 rounds: **{fmt(fp32)} GFLOP/s in fp32, "
             f"{fmt(bf16)} in bf16**.", "",
             "One bare training step at each script's update batch, with its network class and default "
             "speed settings (forward, backward, optimizer step; the loss a stand-in). GFLOP counted by hand "
             "(`update_flops`: conv and linear multiply-adds x 2; forward, backward without the frames' "
             "gradient, DQN's target forward). The update-only ceiling is the most agent steps/s the update "
             "alone allows at the script's defaults. The last column is the same step in the precision the "
             "default does not use: where it is faster, the default precision is the wrong one here.", ""]
    rows = []
    for s in setup.scripts:
        f, w = figures[s], setup.workloads[s]
        loop_update = f["runs"].get("ours", {}).get("phases", {}).get("update")
        loop_gflops = gflops_per_second(f["flops"] * w.updates_per_cycle * PER / w.steps_per_cycle, loop_update)
        other = median(results.get(("update_other_precision", s)))
        rows.append([s, f"{w.updates_per_cycle} x ({setup.update_what.get(s, '-')}) per {w.steps_per_cycle:,} "
                        f"agent steps", fmt(f["flops"] / 1e9, 2), fmt(f["update_s"] and 1000 * f["update_s"], 1),
                     fmt(gflops_per_second(f["flops"], f["update_s"])), fmt(loop_gflops),
                     fmt(f["update_ceiling"]),
                     "-" if other is None else f"{1000 * other:,.1f} ms ({setup.other_precision[s]})"])
    return lines + table(["script", "update at its defaults", "GFLOP per step", "ms per step (bare)", "GFLOP/s bare",
                          "GFLOP/s in the loop", "update-only ceiling (agent steps/s)", "other precision"], rows,
                         align="llrrrrrr")


def rollout_section(setup: Setup, results: Results, figures: dict, env_id: str) -> list[str]:
    """The bare forward pass of each script (with --only ceiling) and the env backends (with --only env)."""
    lines = ["## Bare costs of the rollout", ""]
    if "ceiling" in setup.sections:
        rows = []
        for s in setup.scripts:
            f, w = figures[s], setup.workloads[s]
            flops = forward_flops(w.num_envs, NUM_ACTIONS, w.value_head)
            rows.append([s, setup.forward_what.get(s, "-"), fmt(f["forward_s"] and 1000 * f["forward_s"], 2),
                         fmt(gflops_per_second(flops, f["forward_s"])),
                         fmt(w.forwards_per_cycle * PER / w.steps_per_cycle, 1),
                         fmt(f["bare"].get("inference"), 2)])
        lines += table(["script", "forward pass", "ms per forward", "GFLOP/s", f"forwards per {PER:,} agent steps",
                        f"s per {PER:,} agent steps"], rows, align="llrrrr")
    if "env" in setup.sections:
        sizes = sorted({setup.workloads[s].num_envs for s in setup.scripts})
        users = {n: "/".join(s for s in setup.scripts if setup.workloads[s].num_envs == n) for n in sizes}
        lines += [f"`wrappers.make_vector_env` on {env_id}, random actions, agent steps/s (best of 3 "
                  f"windows after 50 warm-up steps; native: ale-py's C++ AtariVectorEnv on min(envs, cores) "
                  f"threads; sync/async: gymnasium's vector envs over AtariPreprocessing):", ""]
        rows = [[b, *(fmt(results.median(("env", b, n))) for n in sizes)] for b in results.env_backends()]
        lines += table(["backend", *(f"{n} env{'s' if n > 1 else ''} ({users[n]})" for n in sizes)], rows)
    return lines


def loops_section(setup: Setup, figures: dict) -> list[str]:
    """Our scripts' runs (the working tree's, and --ref's), each phase in the loop beside its bare cost."""
    lines = ["## Our scripts in their loops", "",
             f"Each script at its defaults, {', '.join(f'{s} {setup.steps[s]:,}' for s in setup.scripts)} "
             f"agent steps, `--eval-episodes 0 --no-progress`, DQN `{' '.join(DQN_FLAGS)}`. Agent steps/s "
             f"over the window after the warm-up (from the event times of charts/SPS); each phase (time/<phase>) "
             f"in seconds per {PER:,} agent steps beside the same work done bare; other = the loop's time "
             f"outside every timed phase (logging, buffers, the loop itself). DQN's inference can be below its "
             f"bare cost: it skips the network on the steps where it explores (`--lazy-greedy`); its replay "
             f"sampling has no bare counterpart here.", ""]
    for s in setup.scripts:
        for who, title in (("ours", "working tree"), ("ref", f"at {setup.ref}")):
            run = figures[s]["runs"].get(who)
            if run is not None:
                lines += loop_lines(s, title, run, figures[s])
    return lines


def loop_lines(script: str, title: str, run: dict, f: dict) -> list[str]:
    """One run's steps/s as a fraction of each ceiling, and its phases against their bare costs."""
    total = PER / run["sps"]
    rows = []
    for phase, loop in run["phases"].items():
        bare = f["bare"].get(phase)
        rows.append([phase, fmt(loop, 2), fmt(bare, 2), fmt_overhead(overhead(loop, bare))])
    bare_total = sum(f["bare"].values()) if f["serial_ceiling"] else None
    rows.append(["**total**", fmt(total, 2), fmt(bare_total, 2), fmt_overhead(overhead(total, bare_total))])
    ceilings = [f"{ratio(run['sps'], c):.2f} of the {name} ceiling ({c:,.0f})" for name, c in
                (("serial", f["serial_ceiling"]), ("update-only", f["update_ceiling"])) if c]
    lines = [f"**{script}** ({title}): {run['sps']:,.0f} agent steps/s after warm-up ({fmt(run['sps_whole'])} "
             f"over the whole run, as the script reports it)" + "".join(f"; {c}" for c in ceilings), ""]
    return lines + table(["phase", f"loop, s per {PER:,} steps", "bare", "overhead (loop / bare - 1)"], rows)


def table_section(setup: Setup, results: Results, figures: dict) -> list[str]:
    """The table: ours beside the peers and the ceilings; then before/after (--ref) and the env backends."""
    lines = ["## The table", "",
             "Agent steps/s after the warm-up, medians over the rounds, all measured in this run. Peers: "
             "CleanRL's own scripts (gymnasium 0.29.1, ale-py 0.9.1), Stable-Baselines3 2.9.2 at the rl-zoo "
             "Atari settings (benchmark/sb3_speed.py). Ceilings: update-only = the bare update's time alone; "
             "serial = env + forward + update, each at its bare cost.", ""]
    rows = []
    for s in setup.scripts:
        f = figures[s]
        ours = f["runs"].get("ours", {}).get("sps")
        cleanrl, sb3 = f["runs"].get("cleanrl", {}).get("sps"), f["runs"].get("sb3", {}).get("sps")
        rows.append([s, fmt(ours), fmt(cleanrl), fmt_ratio(ratio(ours, cleanrl)), fmt(sb3), fmt_ratio(ratio(ours, sb3)),
                     fmt(f["update_ceiling"]), fmt_ratio(ratio(ours, f["update_ceiling"])), fmt(f["serial_ceiling"]),
                     fmt_ratio(ratio(ours, f["serial_ceiling"]))])
    lines += table(["script", "ours", "CleanRL", "ours / CleanRL", "SB3", "ours / SB3", "update-only ceiling",
                    "ours / update-only", "serial ceiling", "ours / serial"], rows)
    if setup.ref:
        rows = []
        for s in setup.scripts:
            runs = figures[s]["runs"]
            before, after = runs.get("ref", {}).get("sps"), runs.get("ours", {}).get("sps")
            rows.append([s, fmt(before), fmt(after), fmt_ratio(ratio(after, before))])
        lines += [f"Before and after: our scripts at {setup.ref} and in the working tree, interleaved in this run.", ""]
        lines += table(["script", f"at {setup.ref}", "working tree", "after / before"], rows)
    if "env" in setup.sections:
        sizes = sorted({setup.workloads[s].num_envs for s in setup.scripts})
        rows = [[f"env backend {b}", *(fmt(results.median(("env", b, n))) for n in sizes)]
                for b in results.env_backends()]
        lines += table(["env backend, random actions", *(f"{n} env{'s' if n > 1 else ''}" for n in sizes)], rows)
    return lines


def rounds_section(results: Results) -> list[str]:
    """Every measurement of every round, with the cores other processes used meanwhile."""
    lines = ["## Every measurement, by round", "",
             "other processes: the cores that processes other than this benchmark and its children used "
             "meanwhile (a figure measured beside a busy process is slower than the machine).", ""]
    rows = []
    for round_, label, value, unit, others in results.rows:
        if isinstance(value, dict):
            text = f"failed: {value['error']}" if "error" in value else \
                (f"{fmt(value['sps'])} {unit} ({fmt(value.get('sps_whole'))} over the whole run; "
                 f"{fmt(value.get('wall'))} s)")
        else:
            text = f"{fmt(1000 * value, 2)} ms" if unit == "s" else f"{fmt(value)} {unit}"
        rows.append([str(round_), label, text, fmt(others, 2)])
    return lines + table(["round", "measurement", "value", "other processes (cores)"], rows, align="rllr")


# --- main ---------------------------------------------------------------------------------------------------------

def check_out(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--out '{path}' is a directory: give a file name")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"--out '{path}': the folder '{parent}' does not exist")
    if not os.access(p if p.exists() else parent, os.W_OK):
        raise UsageError(f"--out '{path}' is not writable here")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[-4:]))
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"sections to measure, comma-separated: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--scripts", default=None,
                        help="scripts, comma-separated: ppo, dqn, a2c, pqn (default: those that exist)")
    parser.add_argument("--steps", default=None,
                        help="agent steps per run: N for every script, or ppo=N,dqn=M,... (default: "
                             + ", ".join(f"{s} {n}" for s, n in DEFAULT_STEPS.items()) + ")")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds of everything (default 1)")
    parser.add_argument("--cleanrl", default=None, metavar="DIR",
                        help="a CleanRL checkout: the folder holding cleanrl/ and cleanrl_utils/ (none: no CleanRL)")
    parser.add_argument("--cleanrl-python", default=None, metavar="PYTHON",
                        help="a Python with CleanRL's pinned packages (default: build a venv under the temp folder)")
    parser.add_argument("--sb3-python", default=None, metavar="PYTHON",
                        help="a Python with benchmark/requirements-peers.txt installed (default: build a venv)")
    parser.add_argument("--ref", default=None, metavar="GITREV",
                        help="also time our scripts as committed at GITREV, interleaved with the working tree's")
    parser.add_argument("--pause", type=int, nargs="+", default=[], metavar="PID",
                        help="SIGSTOP these processes while measuring, SIGCONT them after (always)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the report (markdown) to FILE")
    parser.add_argument("--bare-seconds", type=float, default=3.0,
                        help="seconds of each bare measurement (GEMM, update, forward, env) per round (default 3)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one whole run may take (default 3600)")
    return parser.parse_args(argv)


def prepare(opts: argparse.Namespace) -> Setup:
    """Check the command line (UsageError on a mistake) and settle what runs."""
    sections = parse_list(opts.only, SECTIONS, "section")
    existing = [s for s in SCRIPTS if (ROOT / f"{s}_atari.py").exists()]
    scripts = parse_list(opts.scripts, SCRIPTS, "script") if opts.scripts else existing
    for s in scripts:
        if s not in existing:
            raise UsageError(f"{s}_atari.py does not exist in {ROOT}: leave {s} out of --scripts")
    steps = parse_steps(opts.steps, scripts)
    if opts.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {opts.repeat}")
    if not opts.bare_seconds > 0 or not opts.timeout > 0:
        raise UsageError("--bare-seconds and --timeout must be above 0")
    if opts.out:
        check_out(opts.out)
    cleanrl = None
    if opts.cleanrl is not None:
        cleanrl = Path(opts.cleanrl).resolve()
        if not (cleanrl / "cleanrl").is_dir() or not (cleanrl / "cleanrl_utils").is_dir():
            raise UsageError(f"--cleanrl '{opts.cleanrl}' holds no cleanrl/ and cleanrl_utils/: give the folder of a "
                             f"CleanRL checkout")
    for flag, python in (("--cleanrl-python", opts.cleanrl_python), ("--sb3-python", opts.sb3_python)):
        if python is not None and not (Path(python).is_file() and os.access(python, os.X_OK)):
            raise UsageError(f"{flag} '{python}' is not an executable file")
    if opts.ref is not None:
        if "ours" not in sections:
            raise UsageError("--ref times our scripts at another commit: keep 'ours' in --only")
        found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{opts.ref}^{{commit}}"],
                               capture_output=True, text=True)
        if found.returncode != 0:
            raise UsageError(f"--ref '{opts.ref}' is no commit of {ROOT}")
    check_pause(opts.pause)
    workloads = {s: workload(s, script_args(s)) for s in scripts}
    for s in scripts:
        if ("ours" in sections or "peers" in sections) and steps[s] < min_steps(workloads[s]):
            raise UsageError(f"--steps {steps[s]} is too short for {s}: a run needs at least {min_steps(workloads[s])} "
                             f"agent steps ({workloads[s].warmup} of warm-up, then one logged interval to measure)")
    import harness

    setup = Setup(scripts=scripts, sections=sections, steps=steps, workloads=workloads,
                  env_id=harness.RunArgs.env_id, bare_seconds=opts.bare_seconds, timeout=opts.timeout,
                  tmp=Path(tempfile.mkdtemp(prefix="throughput-")), cleanrl=cleanrl)
    setup.env_backends = {s: script_args(s).env_backend for s in scripts}
    return setup


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    peer_env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}  # before our settings below
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a kill still runs the `finally`s: SIGCONT, worktree removal
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    try:
        setup = prepare(opts)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup.peer_env = peer_env
    try:
        return measure_and_report(opts, setup)
    finally:
        shutil.rmtree(setup.tmp, ignore_errors=True)


def measure_and_report(opts: argparse.Namespace, setup: Setup) -> int:
    import torch

    import harness

    meta = dict(env_id=setup.env_id, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                command="python benchmark/throughput.py " + " ".join(sys.argv[1:]),
                cpu=cpu_model(), cores=cores(), torch=torch.__version__, bf16=harness.native_bf16(),
                load_before=" ".join(f"{x:.2f}" for x in os.getloadavg()), rounds=opts.repeat,
                paused=", ".join(map(str, opts.pause)))
    torch.set_num_threads(cores())
    torch.set_flush_denormal(True)  # harness.RunArgs.flush_denormal's default

    # Peers' environments first, before anything is timed or paused.
    if "peers" in setup.sections:
        try:
            peer_pythons(setup, opts.cleanrl_python, opts.sb3_python)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    bare_fns = {}
    if "ceiling" in setup.sections:
        for s in setup.scripts:
            fn, what, note = bare_update(s, setup.workloads[s])
            bare_fns[("update", s)], setup.update_what[s] = fn, what
            if note:
                setup.notes.append(note)
            # The same step in the other precision: shows where the default precision is the slower one here.
            default_bf16 = "bf16 autocast" in what
            bare_fns[("update_other_precision", s)] = bare_update(s, setup.workloads[s], not default_bf16)[0]
            setup.other_precision[s] = "fp32" if default_bf16 else "bf16 autocast"
            bare_fns[("forward", s)], setup.forward_what[s] = bare_forward(s, setup.workloads[s])

    results = Results()
    try:
        measure_rounds(opts, setup, results, bare_fns)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join(report(setup, results, meta)) + "\n"
    print(text, end="")
    if opts.out:
        Path(opts.out).write_text(text)
        say(f"written to {opts.out}")
    return 0


def measure_rounds(opts: argparse.Namespace, setup: Setup, results: Results, bare_fns: dict) -> None:
    """Every measurement, --repeat rounds of them, with the --ref worktree in place and --pause in force."""
    with contextlib.ExitStack() as stack:
        if setup.ref is None and opts.ref is not None:
            setup.ref = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", opts.ref],
                                       capture_output=True, text=True).stdout.strip() or opts.ref
            setup.ref_tree = stack.enter_context(worktree(opts.ref, setup.tmp))
        stack.enter_context(paused(opts.pause))
        for round_ in range(1, opts.repeat + 1):
            say(f"== round {round_} of {opts.repeat}")
            if "ceiling" in setup.sections:
                measure_ceiling(setup, results, round_, bare_fns)
            if "env" in setup.sections:
                measure_env(setup, results, round_)
            if "ours" in setup.sections or "peers" in setup.sections:
                for s in setup.scripts:
                    measure_runs(setup, results, round_, s)


@contextlib.contextmanager
def worktree(rev: str, tmp: Path):
    """A detached `git worktree` of this repository at `rev`, removed afterwards."""
    path = tmp / "ref-worktree"
    added = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                           capture_output=True, text=True)
    if added.returncode != 0:
        raise RuntimeError(f"git worktree add of {rev} failed: {added.stderr.strip().splitlines()[-1:]}")
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
