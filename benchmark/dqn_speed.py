"""How fast dqn_atari.py runs here, what each speed option buys, and how much memory a full replay takes.

Five measurements, printed as one report:
  1. The resident memory (VmRSS) of a full 1M-transition replay memory, filled with real Breakout frames so
     that every page is touched. A replay that stores 4-frame stacks for s and s' would take 1M x 2 x 28,224
     bytes = 52.6 GiB; one that stores each stack once (SB3's optimize_memory_usage) 26.3 GiB.
  2. Agent steps/s of dqn_atari.py's own training loop, as the script prints it, with the phase breakdown
     (env, inference, replay sampling, update), with CleanRL's benchmark flags (`--learning-starts 1000
     --buffer-size 100000`, Breakout, 1 env, default hyperparameters): our defaults; `--torch-threads 1`;
     each speed option flipped alone; and a "CleanRL-like" configuration of the same script as the
     same-machine baseline (gymnasium sync env, fp32, contiguous memory, Q-values computed on every step,
     torch's default threads for acting too). CleanRL's own dqn_atari.py printed 161 steps/s over 20,000
     steps on the reference machine (2-core AMD EPYC with bf16, /work/shared/reference/README.md), not here.
     Runs are 3,000 agent steps by default: on a 2-core Intel without bf16 an update can take 350 ms with 2
     torch threads, and one run (one pause of the background runs) must stay under 4 minutes. The first
     1,000 steps have no update, so steps/s is higher than over 20,000 steps; "ms per update" carries over.
  3. The pieces, in this process: one update (batch 32: two forwards, backward, Adam) and one batch-1
     forward, per thread count, memory format, Adam kernel and precision, interleaved round by round.
  4. Where an update's time goes with the defaults: torch.profiler's self CPU time per operator group
     (convolutions, linear layers, Adam, copies, elementwise), and the update's arithmetic rate in GFLOP/s.
  5. This machine against the reference machine kind on which CleanRL's 161 steps/s were measured: the
     figures /work/shared/reference/README.md gives for it (a batch-256 Nature-CNN training step in fp32,
     channels-last and bf16; a single-precision matrix product), measured here the same way.

On a shared machine, `--pause PATTERN` stops the processes whose command line matches PATTERN (pgrep -f;
never this one or its parents) during each timed measurement of sections 2 to 5 and resumes them right
after, always, one measurement at a time. Every line says how many cores other processes used while it was measured.

Usage: python benchmark/dqn_speed.py [--steps 3000] [--skip-ablation] [--only NAME ...] [--skip-pieces]
                                     [--skip-memory] [--skip-profile] [--skip-machine]
                                     [--pause PATTERN]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dqn_atari  # noqa: E402
import harness  # noqa: E402
import wrappers  # noqa: E402

BENCH_FLAGS = ["--learning-starts", "1000", "--buffer-size", "100000", "--eval-episodes", "0", "--no-progress"]
# The CleanRL-like baseline: every speed option of ours off, the env as CleanRL builds it (gymnasium
# SyncVectorEnv over AtariPreprocessing), fp32, a Q forward on every step, default torch threads.
CLEANRL_LIKE = ["--env-backend", "sync", "--no-lazy-greedy", "--inference-threads", "None", "--no-bf16",
                "--no-channels-last", "--no-fused-adam", "--no-flush-denormal"]
SUMMARY = re.compile(r"(\d+) agent steps at (\d+) steps/s \(env ([\d.]+)s, inference ([\d.]+)s, "
                     r"replay ([\d.]+)s, update ([\d.]+)s, (\d+) updates\)")
RUN_TIMEOUT_S = 240  # one whole-process run; a pause of the background processes lasts at most this


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def others_matching(pattern: str) -> list[int]:
    """PIDs whose command line matches `pattern` (as `pgrep -f`), except this process and its ancestors,
    whose command lines hold the pattern itself: pausing them would freeze the benchmark."""
    found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
    ours, pid = set(), os.getpid()
    while pid > 1:
        ours.add(pid)
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the parent's pid
    return [int(p) for p in found if int(p) not in ours]


@contextlib.contextmanager
def measured(pattern: str | None, note: list):
    """Pause the processes matching `pattern` (if any) for the block, always resume them; append to `note`
    the cores that processes other than ours used meanwhile."""
    paused = others_matching(pattern) if pattern else []
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    busy, own, start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    try:
        yield
    finally:
        others = (busy_cpu_seconds() - busy) - (own_cpu_seconds() - own)
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        note.append(max(others, 0.0) / max(time.perf_counter() - start, 1e-9))


def whole_process(name: str, extra: list[str], steps: int, workdir: str, pattern: str | None) -> tuple[str, int]:
    # "--run_name" (not "--run-name") so that a `pkill -f -- '--run-name'` pause never catches this run.
    cmd = [sys.executable, os.path.join(ROOT, "dqn_atari.py"), *BENCH_FLAGS, "--total-timesteps", str(steps),
           "--runs-dir", workdir, "--run_name", re.sub(r"\W+", "_", name), *extra]
    note: list[float] = []
    start = time.perf_counter()
    try:
        with measured(pattern, note):
            result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"{name:<32} did not finish {steps} steps within {RUN_TIMEOUT_S} s", 0
    wall = time.perf_counter() - start
    match = SUMMARY.search(result.stderr)
    if result.returncode != 0 or match is None:
        return f"{name:<32} failed: {result.stderr.strip().splitlines()[-1:]}", 0
    n, sps, env, inf, rep, upd, updates = match.groups()
    per_step = lambda s: 1000 * float(s) / int(n)  # noqa: E731  ms per agent step
    return (f"{name:<32} {int(sps):>4} steps/s ({int(n) / wall:>3.0f}/s incl. startup) | ms per agent step: "
            f"env {per_step(env):.2f}, inference {per_step(inf):.2f}, replay {per_step(rep):.2f}, update "
            f"{per_step(upd):.2f} ({1000 * float(upd) / max(int(updates), 1):.1f} ms per update) | other "
            f"processes {note[0]:.2f} cores", int(sps))


def training_step(channels_last: bool, fused: bool, bf16: bool, batch: int = 32, num_actions: int = 4,
                  with_target: bool = True):
    """One DQN update as dqn_atari.py does it (target forward, online forward, MSE TD loss, backward, Adam)
    on fixed random frames, and a batch-1 forward; returns (update, act). Without the target forward
    (with_target False) it is the plain training step the reference figures time."""
    frames = torch.randint(0, 256, (batch, 5, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, num_actions, (batch,))
    rewards, terminated = torch.zeros(batch), torch.zeros(batch, dtype=torch.bool)
    one = torch.randint(0, 256, (1, 4, 84, 84), dtype=torch.uint8)
    torch.manual_seed(0)
    q = dqn_atari.QNetwork(num_actions, channels_last=channels_last)
    target = dqn_atari.QNetwork(num_actions, channels_last=channels_last)
    optimizer = torch.optim.Adam(q.parameters(), lr=1e-4, fused=fused or None)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def update():
        if with_target:
            with torch.no_grad(), autocast:
                next_q = target(frames[:, 1:])
            y = dqn_atari.td_target(rewards, next_q, terminated, 0.99)
        else:
            y = rewards
        with autocast:
            q_taken = q(frames[:, :-1]).gather(1, actions[:, None]).squeeze(1)
        loss = dqn_atari.td_loss(q_taken, y, "mse")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def act():
        with torch.inference_mode(), autocast:
            q(one).argmax(1)

    return update, act


def interleaved(benches: list, rounds: int) -> list[float]:
    """Median over `rounds` of the mean ms per call of each (threads, fn, calls per round): the functions
    take turns round after round, so a drift of this machine's speed falls on all of them alike."""
    times: list[list[float]] = [[] for _ in benches]
    for threads, fn, _ in benches:  # warm-up
        torch.set_num_threads(threads)
        for _ in range(2):
            fn()
    for _ in range(rounds):
        for (threads, fn, reps), out in zip(benches, times):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            out.append(1000 * (time.perf_counter() - start) / reps)
    return [float(np.median(t)) for t in times]


def pieces(pattern: str | None, rounds: int = 8) -> list[str]:
    """One update (batch 32) and one batch-1 forward per thread count, memory format, Adam kernel and
    precision, interleaved round by round; each figure is the median of the rounds' means."""
    configs = [(t, cl, fused, False) for t in (1, 2) for cl in (False, True) for fused in (False, True)]
    configs.append((2, False, True, True))
    steps = [training_step(cl, fused, bf16) for _, cl, fused, bf16 in configs]
    note: list[float] = []
    with measured(pattern, note):
        medians = interleaved([(c[0], fn, reps) for c, fns in zip(configs, steps) for fn, reps in zip(fns, (5, 50))],
                              rounds)
    lines = [f"{rounds} interleaved rounds of 5 updates and 50 forwards each | other processes {note[0]:.2f} cores"]
    for i, (threads, channels_last, fused, bf16) in enumerate(configs):
        layout = "channels-last" if channels_last else "contiguous"
        adam = "fused Adam" if fused else "loop Adam "
        lines.append(f"threads {threads}, {layout:<13} {adam} {'bf16' if bf16 else 'fp32'}: update (batch 32) "
                     f"{medians[2 * i]:5.1f} ms, batch-1 forward {medians[2 * i + 1]:.2f} ms")
    return lines


def update_flops(batch: int = 32, num_actions: int = 4) -> float:
    """Floating-point operations of one update (2 per multiply-add), counted from the layer shapes: the
    target and the online forward, and the backward (weight gradients of every layer, input gradients of
    every layer but the first: the frames need none)."""
    q = dqn_atari.QNetwork(num_actions)
    macs: list[int] = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs.append(output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, torch.nn.Linear):
            macs.append(output.numel() * module.in_features)

    for m in q.modules():
        m.register_forward_hook(count)
    with torch.no_grad():
        q(torch.zeros(batch, 4, 84, 84, dtype=torch.uint8))
    forward = sum(macs)
    return 2.0 * (forward + forward + (2 * forward - macs[0]))


def machine(pattern: str | None, rounds: int = 5) -> list[str]:
    """This machine against the reference machine kind, with the figures /work/shared/reference/README.md
    gives for it: a Nature-CNN training step (forward, backward, torch's default Adam) at batch 256 in fp32
    (104 ms there), channels-last (66 ms) and bf16 autocast (40 ms), and a single-precision matrix product
    (about 206 GFLOP/s there; here a 2048 x 2048 torch.mm)."""
    threads = len(os.sched_getaffinity(0))
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    benches = [(threads, lambda: torch.mm(a, b), 3)]
    for channels_last, bf16 in ((False, False), (True, False), (False, True)):
        benches.append((threads, training_step(channels_last, False, bf16, batch=256, with_target=False)[0], 3))
    note: list[float] = []
    with measured(pattern, note):
        mm, contiguous, cl, bf16 = interleaved(benches, rounds)
    gflops = 2 * 2048 ** 3 / (mm / 1000) / 1e9
    return [
        f"{threads} torch threads, {rounds} interleaved rounds | other processes {note[0]:.2f} cores",
        f"fp32 matrix product (2048 x 2048): {gflops:.0f} GFLOP/s (reference machine: about 206)",
        f"Nature-CNN training step at batch 256 (forward, backward, default Adam): fp32 {contiguous:.0f} ms, "
        f"channels-last {cl:.0f} ms, bf16 autocast {bf16:.0f} ms (reference machine: 104, 66 and 40 ms)",
    ]


# Groups of torch operators for the profile of an update: (label, operator names).
OPERATOR_GROUPS = (
    ("convolutions, forward", ("aten::mkldnn_convolution",)),
    ("convolutions, backward", ("aten::convolution_backward",)),
    ("linear layers (addmm, mm)", ("aten::addmm", "aten::mm")),
    ("Adam", ("aten::_fused_adam_", "Optimizer.step#Adam.step")),
    ("copies (memory format, dtype)", ("aten::copy_", "aten::clone", "aten::_to_copy")),
    ("elementwise (/255, ReLU and its gradient)", ("aten::div", "aten::clamp_min", "aten::threshold_backward",
                                                   "aten::relu")),
)


def update_profile(pattern: str | None, updates: int = 20) -> list[str]:
    """Where the time of one update goes with the defaults (all cores, channels-last, fused Adam, fp32):
    torch.profiler's self CPU time per operator group, and the update's arithmetic rate."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    update, _ = training_step(channels_last=True, fused=True, bf16=False)
    for _ in range(5):
        update()
    note: list[float] = []
    with measured(pattern, note):
        start = time.perf_counter()
        for _ in range(updates):
            update()
        plain_ms = 1000 * (time.perf_counter() - start) / updates
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(updates):
                update()
    self_ms = {e.key: e.self_cpu_time_total / 1000 / updates for e in prof.key_averages()}
    total = sum(self_ms.values())
    flops = update_flops()
    lines = [f"{updates} updates, {len(os.sched_getaffinity(0))} threads | other processes {note[0]:.2f} cores",
             f"an update takes {plain_ms:.1f} ms unprofiled, {total:.1f} ms under the profiler; "
             f"{flops / 1e9:.2f} GFLOP, i.e. {flops / (plain_ms / 1000) / 1e9:.0f} GFLOP/s"]
    grouped = 0.0
    for label, names in OPERATOR_GROUPS:
        ms = sum(self_ms.get(n, 0.0) for n in names)
        grouped += ms
        lines.append(f"  {label:<44} {ms:5.1f} ms  {100 * ms / total:4.1f}%")
    lines.append(f"  {'everything else (autograd, allocation, ...)':<44} {total - grouped:5.1f} ms  "
                 f"{100 * (total - grouped) / total:4.1f}%")
    return lines


def full_replay_memory() -> list[str]:
    env = wrappers.make_vector_env("BreakoutNoFrameskip-v4", 1, seed=1)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    game = [obs[0, -1].copy()]
    for _ in range(2000):  # real frames of random play, each one non-zero
        obs, *_ = env.step(rng.integers(4, size=1))
        game.append(obs[0, -1].copy())
    env.close()
    assert all(frame.any() for frame in game)
    before = rss_bytes()
    memory = dqn_atari.ReplayMemory(1_000_000, 1)
    allocated = rss_bytes()
    start = time.perf_counter()
    memory.add_observation(game[0][None], np.ones(1, bool))
    no, action, reward = np.zeros(1, bool), np.zeros(1, np.int64), np.ones(1, np.float32)
    for t in range(1, 1_000_001):
        memory.add(action, reward, no, game[t % len(game)][None], no)
    fill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(200):
        memory.sample(32)
    sample_ms = 1000 * (time.perf_counter() - start) / 200
    full = rss_bytes()
    stored = sum(a.nbytes for a in memory.state().values())
    return [f"bytes per transition: {dqn_atari.ReplayMemory.bytes_per_transition()} (84x84 frame + action, reward, "
            f"3 flags); arrays of 1,000,000 transitions: {stored / 1e9:.3f} GB",
            f"process VmRSS: {before / 1e9:.2f} GB before allocating, {allocated / 1e9:.2f} GB after allocating "
            f"(pages untouched), {full / 1e9:.2f} GB full",
            f"the full replay memory adds {(full - before) / 1e9:.2f} GB = {(full - before) / 2**30:.2f} GiB "
            f"of resident memory (limit 8 GB)",
            f"filled in {fill_s:.0f} s; a batch of 32 transitions sampled in {sample_ms:.2f} ms "
            f"(not paused: other processes running)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3_000, help="agent steps per whole-process run")
    parser.add_argument("--skip-ablation", action="store_true",
                        help="only the defaults, --torch-threads 1 and the CleanRL-like run")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only the whole-process runs of these names")
    parser.add_argument("--skip-pieces", action="store_true", help="do not time the update and the forward alone")
    parser.add_argument("--skip-memory", action="store_true", help="do not fill a 1M replay memory")
    parser.add_argument("--skip-machine", action="store_true",
                        help="do not compare this machine with the reference machine kind")
    parser.add_argument("--skip-profile", action="store_true", help="do not profile one update by operator group")
    parser.add_argument("--shared-steps", type=int, default=0,
                        help="also run the defaults and --torch-threads 1 this many steps without pausing anything")
    parser.add_argument("--pause", default=None, metavar="PATTERN",
                        help="pkill -STOP / -CONT the processes matching PATTERN around each timed measurement")
    opts = parser.parse_args()
    # A kill must still run the `finally` that resumes the paused processes.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# dqn_atari.py speed and memory, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; bf16 native: {harness.native_bf16()}; "
          f"torch {torch.__version__}; load average (1, 5, 15 min) before: {load}")
    print(f"paused during timed measurements: {opts.pause!r}" if opts.pause else "nothing paused")
    defaults = dqn_atari.Args()
    print(f"dqn_atari defaults here: env backend {defaults.env_backend}, lazy_greedy {defaults.lazy_greedy}, "
          f"inference_threads {defaults.inference_threads}, channels_last {defaults.channels_last}, "
          f"fused_adam {defaults.fused_adam}, bf16 {defaults.bf16}")

    if not opts.skip_memory:
        print("\n## replay memory of 1,000,000 transitions")
        for line in full_replay_memory():
            print(line, flush=True)

    print(f"\n## whole process, Breakout, 1 env, {' '.join(BENCH_FLAGS)} --total-timesteps {opts.steps}")
    print("steps/s = the script's own figure (training loop only); phases in ms per agent step")
    one = ["--torch-threads", "1"]
    runs = {"defaults": [], "--torch-threads 1": one}
    if not opts.skip_ablation:
        # Each option flipped alone; from the 1-thread line, the fastest here, except the option that only
        # matters with several torch threads.
        runs.update({
            "--inference-threads None": ["--inference-threads", "None"],
            "-t 1 --no-lazy-greedy": one + ["--no-lazy-greedy"],
            "-t 1 --env-backend sync": one + ["--env-backend", "sync"],
            "-t 1 --no-channels-last": one + ["--no-channels-last"],
            "-t 1 --no-fused-adam": one + ["--no-fused-adam"],
            "-t 1 --bf16": one + ["--bf16"],
        })
    runs["CleanRL-like (all options off)"] = CLEANRL_LIKE
    if opts.only:
        runs = {name: extra for name, extra in runs.items() if name in opts.only}
    sps = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, extra in runs.items():
            line, sps[name] = whole_process(name, extra, opts.steps, workdir, opts.pause)
            print(line, flush=True)
            time.sleep(15)  # let the paused processes run between measurements
        base = sps.get("CleanRL-like (all options off)")
        for name in ("defaults", "--torch-threads 1"):
            if base and sps.get(name):
                print(f"{name} / CleanRL-like on this machine: {sps[name] / base:.2f}x ({sps[name]} vs {base} steps/s; "
                      f"the 161 steps/s of CleanRL's own script were measured on another CPU)")
        if opts.shared_steps:
            print(f"\n## the same, NOT paused: sharing the cores with the other processes, {opts.shared_steps} steps")
            for name, extra in (("defaults, shared", []), ("--torch-threads 1, shared", ["--torch-threads", "1"])):
                print(whole_process(name, extra, opts.shared_steps, workdir, None)[0], flush=True)

    if not opts.skip_pieces:
        print("\n## pieces (this process)")
        for line in pieces(opts.pause):
            print(line, flush=True)
    if not opts.skip_profile:
        print("\n## where an update's time goes (defaults, batch 32)")
        for line in update_profile(opts.pause):
            print(line, flush=True)
    if not opts.skip_machine:
        print("\n## this machine against the reference machine kind (/work/shared/reference/README.md)")
        for line in machine(opts.pause):
            print(line, flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
