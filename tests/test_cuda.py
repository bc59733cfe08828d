"""The CUDA paths (issue 22): files that load without a GPU, random streams of the device in use, --bf16
decided for the device in use, resume with the other --fused-adam, more processes than GPUs, the collective
timeout, and the suite pinned to the CPU.

The suite hides the GPUs (conftest.py); a test that needs one takes the `cuda` fixture and runs its GPU part
in a script started with the GPUs visible, while this process reads the result as a machine without a GPU
would. Without a GPU those variants are skipped with the reason; the decisions are pure functions, or
setup_process with torch's CUDA answers faked, and run everywhere."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys

import pytest
import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import harness  # noqa: E402
import ppo_atari  # noqa: E402
import wrappers  # noqa: E402

PPO = os.path.join(ROOT, "ppo_atari.py")
DQN = os.path.join(ROOT, "dqn_atari.py")


def tiny() -> list[str]:
    """test_harness.TINY: PPO's every code path in seconds."""
    from test_harness import TINY

    return TINY


@pytest.fixture(params=["cpu", "cuda"])
def on_device(request) -> tuple[str, dict[str, str]]:
    """("cpu" or "cuda", the environment of a script that runs there); the CUDA variant takes the `cuda`
    fixture, and is skipped with its reason where there is no GPU."""
    if request.param == "cpu":
        return "cpu", dict(os.environ)
    return "cuda", request.getfixturevalue("cuda").env


def tensors(obj):
    """Every tensor in obj, through dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors(value)


@pytest.fixture
def process_state():
    """Undo what an in-process setup_process changes: threads, cudnn's flag, the random streams."""
    threads, deterministic = torch.get_num_threads(), torch.backends.cudnn.deterministic
    states = harness.rng_states()
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic = deterministic
    harness.set_rng_states(states)


@dataclasses.dataclass
class FakeGpus:
    """What torch.cuda answers on a machine with `count` GPUs of compute capability `capability`, where bf16
    is only emulated below 8.0; set_device and init_process_group are recorded, never done."""

    count: int
    capability: tuple[int, int]
    set_device: list = dataclasses.field(default_factory=list)
    init_process_group: list = dataclasses.field(default_factory=list)
    rng_set: list = dataclasses.field(default_factory=list)


@pytest.fixture
def fake_gpus(monkeypatch):
    """install(count, capability): torch.cuda answers as FakeGpus says (CUDA itself never starts)."""

    def install(count: int, capability: tuple[int, int] = (7, 0)) -> FakeGpus:
        gpus = FakeGpus(count, capability)

        def stream_of(device="cuda") -> torch.Tensor:  # a GPU's random state: 8 bytes of its index
            index = device if isinstance(device, int) else torch.device(device).index or 0
            return torch.full((8,), index, dtype=torch.uint8)

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: capability >= (8, 0) or including_emulation)
        monkeypatch.setattr(torch.cuda, "set_device", gpus.set_device.append)
        monkeypatch.setattr(torch.cuda, "get_rng_state", stream_of)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [stream_of(i) for i in range(count)])
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": gpus.rng_set.append(
            (state, device)))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("set every GPU's stream"))
        monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: gpus.init_process_group.append(kw))
        return gpus

    return install


# --- 6. the suite runs on the CPU ---------------------------------------------------------------------------------

def test_the_suite_and_its_scripts_see_no_gpu():
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # inherited by every script a test starts
    assert not torch.cuda.is_available()


# --- 4. --bf16 decided for the device in use ----------------------------------------------------------------------

@pytest.mark.parametrize("device_type, capability, cpu_flags, row", [
    ("cuda", (8, 0), set(), "CUDA GPU of compute capability 8.0 or later (A100, RTX 30xx, H100) -> on"),
    ("cuda", (9, 0), set(), "CUDA GPU of compute capability 8.0 or later (A100, RTX 30xx, H100) -> on"),
    ("cuda", (7, 0), {"amx_bf16"}, "older CUDA GPU (V100, T4: bf16 emulated) -> off"),  # the CPU's AMX is not the GPU's
    ("cuda", (7, 5), set(), "older CUDA GPU (V100, T4: bf16 emulated) -> off"),
    ("cpu", None, {"avx512_bf16"}, "CPU with AVX512-BF16 or AMX -> on"),
    ("cpu", (9, 0), {"amx_bf16"}, "CPU with AVX512-BF16 or AMX -> on"),
    ("cpu", (9, 0), {"avx2", "avx512f"}, "other CPU -> off"),  # --no-cuda beside an H100: the CPU answers
    ("cpu", None, set(), "other CPU -> off"),
])
def test_the_bf16_default_is_the_table_in_help(device_type, capability, cpu_flags, row, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        tyro.cli(ppo_atari.Args, args=["--help"])
    help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert row in help_text
    assert harness.bf16_default(device_type, capability, cpu_flags) == row.endswith("-> on")


@pytest.mark.parametrize("cuda, flags, bf16, expected", [
    (False, {"avx2"}, None, False),  # --no-cuda on a GPU machine whose CPU emulates bf16 (7x slower)
    (False, {"amx_bf16"}, None, True),
    (False, {"amx_bf16"}, False, False),  # typed: as typed
    (True, {"amx_bf16"}, None, False),  # a V100: torch.cuda.is_bf16_supported() says True, emulated
    (True, {"avx2"}, True, True),
])
def test_setup_process_decides_bf16_for_the_device_in_use(fake_gpus, process_state, monkeypatch, cuda, flags, bf16,
                                                          expected):
    fake_gpus(1, capability=(7, 0))
    monkeypatch.setattr(harness, "read_cpu_flags", lambda: flags)
    args = harness.RunArgs(cuda=cuda, bf16=bf16, torch_threads=torch.get_num_threads(), flush_denormal=False)
    assert args.bf16 is bf16  # decided after parsing, not when the settings are made
    proc = harness.setup_process(args)
    assert proc.device.type == ("cuda" if cuda else "cpu")
    assert proc.bf16 is expected


def test_a_resumed_run_decides_bf16_again_unless_typed(tmp_path, monkeypatch):
    """The saved settings keep --bf16 as given (None: decided per device), so a run resumed on another device
    decides again; typed on the resuming command line, it wins (a resumable speed flag)."""
    data = harness.model_file(ppo_atari.Args(), "ppo", ppo_atari.Agent(4), 4)
    assert data["args"]["bf16"] is None
    torch.save(data, tmp_path / "checkpoint.pt")
    for typed, expected in ([], None), (["--no-bf16"], False), (["--bf16"], True):
        monkeypatch.setattr(sys, "argv", ["ppo_atari.py", "--resume", str(tmp_path), *typed])
        args, _ = harness.parse(ppo_atari.Args, algo="ppo")
        assert args.bf16 is expected


# --- 1. more processes than GPUs; 5. the collective timeout ---------------------------------------------------------

@pytest.mark.parametrize("local_world_size, gpus, indices, backend", [
    (1, 1, [0], "nccl"),
    (2, 2, [0, 1], "nccl"),
    (2, 4, [0, 1], "nccl"),
    (3, 2, [0, 1, 0], "gloo"),  # NCCL refuses two ranks on one GPU
    (4, 1, [0, 0, 0, 0], "gloo"),
])
def test_ranks_share_the_gpus_round_robin_when_they_are_fewer(local_world_size, gpus, indices, backend):
    placements = [harness.cuda_placement(r, local_world_size, gpus) for r in range(local_world_size)]
    assert placements == [(i, backend) for i in indices]


def test_setup_process_puts_the_fourth_rank_on_a_shared_gpu_over_gloo(fake_gpus, process_state, monkeypatch):
    gpus = fake_gpus(2)
    for name, value in dict(WORLD_SIZE="4", RANK="3", LOCAL_RANK="3", LOCAL_WORLD_SIZE="4").items():
        monkeypatch.setenv(name, value)
    args = harness.RunArgs(torch_threads=torch.get_num_threads(), flush_denormal=False)
    proc = harness.setup_process(args)
    assert proc.device == torch.device("cuda", 1) and gpus.set_device == [torch.device("cuda", 1)]
    assert len(gpus.init_process_group) == 1
    assert gpus.init_process_group[0]["backend"] == "gloo"
    assert gpus.init_process_group[0]["timeout"] == harness.collective_timeout(args)


def test_the_collective_timeout_outlasts_the_longest_evaluation():
    ten_minutes = datetime.timedelta(minutes=10)  # NCCL's default
    longest_game = wrappers.MAX_EPISODE_FRAMES // wrappers.FRAME_SKIP  # agent steps
    assert longest_game == 27_000
    assert harness.collective_timeout(harness.RunArgs(eval_episodes=0)) == ten_minutes
    for episodes, video in (10, False), (10, True), (100, False):
        games = episodes + video
        longest_eval = datetime.timedelta(seconds=games * longest_game / harness.SLOWEST_EVAL_STEPS_PER_S)
        timeout = harness.collective_timeout(harness.RunArgs(eval_episodes=episodes, eval_video=video))
        assert timeout >= ten_minutes + longest_eval


@pytest.mark.slow
def test_more_processes_than_gpus_train_one_job(tmp_path, cuda):
    ranks = cuda.gpus + 1
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                             str(ranks), PPO, *tiny(), "--total-timesteps", str(64 * ranks), "--save-model",
                             "--run-name", "job"],
                            cwd=tmp_path, env=dict(cuda.env, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round-robin" in result.stderr
    checkpoint = torch.load(tmp_path / "runs" / "job" / "checkpoint.pt", weights_only=True)
    assert len(checkpoint["rng"]) == ranks and all(len(states["cuda"]) == 1 for states in checkpoint["rng"])


# --- 2. random streams of the device in use ---------------------------------------------------------------------------

def test_a_checkpoint_saves_the_random_stream_of_the_device_in_use_only(fake_gpus, tmp_path, capsys):
    """On a machine with two GPUs: a CPU run saves no GPU stream, a run on cuda:1 saves cuda:1's alone."""
    import signal

    fake_gpus(2)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # the Run's StopRequest takes them
    try:
        for device, expected in (torch.device("cpu"), []), (torch.device("cuda", 1), [1]):
            args = harness.RunArgs(runs_dir=str(tmp_path), run_name=device.type, save_model=True, eval_episodes=0,
                                   progress=False)
            proc = harness.Process(rank=0, world_size=1, local_rank=0, device=device, torch_threads=1,
                                   inference_threads=1, env_threads=1, seed=1,
                                   autocast=torch.autocast("cpu", enabled=False))
            model = torch.nn.Linear(2, 2)
            run = harness.Run(args, proc, "ppo", model, torch.optim.Adam(model.parameters()), None, total_steps=1,
                              num_actions=2)
            run.save_checkpoint(1)
            run.writer.close()
            saved = torch.load(tmp_path / device.type / "checkpoint.pt", weights_only=True)
            assert [int(state[0]) for state in saved["rng"][0]["cuda"]] == expected
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def test_a_checkpoint_resumes_on_fewer_gpus_or_none(fake_gpus):
    """A stream saved on cuda:1 of two GPUs goes to the one GPU in use where there is one, and nowhere on a
    CPU, never to every GPU (set_rng_state_all failed for a GPU that is gone)."""
    gpus = fake_gpus(1)
    states = harness.rng_states(torch.device("cpu"))
    saved = dict(states, cuda=[torch.full((8,), 1, dtype=torch.uint8)])
    harness.set_rng_states(saved, torch.device("cpu"))
    assert gpus.rng_set == []
    harness.set_rng_states(saved, torch.device("cuda", 0))
    assert [(int(state[0]), device) for state, device in gpus.rng_set] == [(1, torch.device("cuda", 0))]


# --- 7. checkpoints and model files hold CPU tensors ----------------------------------------------------------------

# A tiny run in a script of its own (where the GPUs are visible for the CUDA variant): one fused Adam step,
# DQN's bf16 target network as the checkpoint's extra, the checkpoint and the final model file.
SAVE_A_RUN = """
import json, sys, torch
sys.path.insert(0, {root!r})
import harness
args = harness.RunArgs(runs_dir={runs!r}, run_name="r", exp_name="tiny", save_model=True, eval_episodes=0,
                       progress=False, torch_threads=1)
proc = harness.setup_process(args)
model = torch.nn.Linear(4, 2).to(proc.device)
optimizer = torch.optim.Adam(model.parameters(), fused=True)
model(torch.ones(1, 4, device=proc.device)).sum().backward()
optimizer.step()
target = torch.nn.Linear(4, 2).to(proc.device, dtype=torch.bfloat16)
run = harness.Run(args, proc, "ppo", model, optimizer, None, total_steps=1, num_actions=2)
run.save_checkpoint(1, target_model=target.state_dict())
run.finish(1, act=None)
capability = torch.cuda.get_device_capability(proc.device) if proc.device.type == "cuda" else None
print(json.dumps(dict(device=str(proc.device), bf16=proc.bf16, capability=capability,
                      cpu_flags=sorted(harness.read_cpu_flags() & {{"avx512_bf16", "amx_bf16"}}))))
"""


@pytest.mark.slow
def test_checkpoints_and_model_files_hold_only_cpu_tensors(on_device, tmp_path):
    """Read here, where CUDA is hidden as on a machine without a GPU, by a plain torch.load."""
    device, env = on_device
    result = subprocess.run([sys.executable, "-c", SAVE_A_RUN.format(root=ROOT, runs=str(tmp_path))], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = json.loads(result.stdout.splitlines()[-1])
    assert ran["device"].startswith(device)
    capability = tuple(ran["capability"]) if ran["capability"] else None
    assert ran["bf16"] == harness.bf16_default(device, capability, set(ran["cpu_flags"]))
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    model_file = torch.load(tmp_path / "r" / "tiny.model", weights_only=True)
    assert checkpoint["optimizer"]["state"][0]["exp_avg"].shape == (2, 4)
    assert checkpoint["target_model"]["weight"].dtype == torch.bfloat16
    assert {str(t.device) for t in tensors(checkpoint)} == {"cpu"}
    assert {str(t.device) for t in tensors(model_file)} == {"cpu"}
    assert len(checkpoint["rng"][0]["cuda"]) == (device == "cuda")  # one stream per device in use


@pytest.mark.slow
@pytest.mark.parametrize("script, flags", [
    (PPO, None),
    (DQN, ["--total-timesteps", "320", "--buffer-size", "1000", "--learning-starts", "100", "--bf16",
           "--no-progress", "--torch-threads", "1", "--env-threads", "1", "--eval-episodes", "0"]),
])
def test_a_run_trained_on_the_gpu_resumes_without_one(tmp_path, cuda, script, flags):
    """Trained on the GPU (DQN with its bf16 target network), saved, then continued by a process that sees no
    GPU: every file loads there, and the run steps on."""
    flags = flags or tiny()
    trained = subprocess.run([sys.executable, script, *flags, "--save-model", "--run-name", "r"], cwd=tmp_path,
                             env=cuda.env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "runs" / "r"
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {str(t.device) for t in tensors(checkpoint)} == {"cpu"} and len(checkpoint["rng"][0]["cuda"]) == 1
    steps = checkpoint["global_step"] * 2
    resumed = subprocess.run([sys.executable, script, "--resume", str(run_dir), "--total-timesteps", str(steps)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == steps


# --- 3. resume with the other --fused-adam ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("saved, resumed", [("--fused-adam", "--no-fused-adam"), ("--no-fused-adam", "--fused-adam")])
def test_resume_with_the_other_fused_adam_loads_and_steps(on_device, tmp_path, saved, resumed):
    _, env = on_device
    first = subprocess.run([sys.executable, PPO, *tiny(), saved, "--save-model", "--run-name", "r"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "r"
    again = subprocess.run([sys.executable, PPO, "--resume", str(run_dir), "--total-timesteps", "128", resumed],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128
    assert checkpoint["optimizer"]["param_groups"][0]["fused"] == (True if resumed == "--fused-adam" else None)
