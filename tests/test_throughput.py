"""benchmark/throughput.py: its arithmetic on hand-made numbers, its command line, and its pause. Nothing
here is timed: the measurements themselves run only when someone runs the benchmark."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmark"))

import throughput as tp  # noqa: E402

# Multiply-adds per observation of the Nature CNN on 4 x 84 x 84 frames (Mnih et al. 2015): output positions
# x output channels x (input channels x kernel area) per conv, inputs x outputs per linear layer.
CONV1 = 20 * 20 * 32 * (4 * 8 * 8)
CONV2 = 9 * 9 * 64 * (32 * 4 * 4)
CONV3 = 7 * 7 * 64 * (64 * 3 * 3)
FC = 64 * 7 * 7 * 512

PPO = tp.Workload("ppo", 8, 1024, 129, 16, 256, False, True, warmup=1024, log_every=1024)
DQN = tp.Workload("dqn", 1, 4, 4, 1, 32, True, False, warmup=2000, log_every=1000)
A2C = tp.Workload("a2c", 16, 80, 6, 1, 80, False, True, warmup=1000, log_every=1000)


def test_nature_cnn_macs_counted_by_hand():
    assert tp.nature_cnn_macs(4) == [CONV1, CONV2, CONV3, FC, 512 * 4]
    assert tp.nature_cnn_macs(6, value_head=True) == [CONV1, CONV2, CONV3, FC, 512 * 7]  # policy 6 + value 1


def test_update_flops_of_each_update_counted_by_hand():
    actor_critic = CONV1 + CONV2 + CONV3 + FC + 512 * (4 + 1)
    q_network = CONV1 + CONV2 + CONV3 + FC + 512 * 4
    # forward + backward: weight gradients everywhere (one forward's worth), input gradients but conv1's
    ppo = 256 * (actor_critic + actor_critic + (actor_critic - CONV1))
    assert tp.update_flops(256, 4, value_head=True) == 2 * ppo
    a2c = 80 * (3 * actor_critic - CONV1)
    assert tp.update_flops(80, 4, value_head=True) == 2 * a2c
    # DQN: the target network's forward on s' on top of the online forward and backward on s
    dqn = 32 * (q_network + q_network + (2 * q_network - CONV1))
    assert tp.update_flops(32, 4, target_forward=True) == 2 * dqn
    assert tp.forward_flops(8, 4, value_head=True) == 2 * 8 * actor_critic
    assert tp.gemm_flops(2048) == 2 * 2048**3


def test_hand_count_matches_the_scripts_networks():
    import torch

    import dqn_atari
    import ppo_atari

    for network, value_head in ((ppo_atari.Agent(4), True), (dqn_atari.QNetwork(4), False)):
        macs = []

        def count(module, inputs, output):
            if isinstance(module, torch.nn.Conv2d):
                macs.append(output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
            elif isinstance(module, torch.nn.Linear):
                macs.append(output.numel() * module.in_features)

        for m in network.modules():
            m.register_forward_hook(count)
        with torch.no_grad():
            network(torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
        assert sum(macs) == sum(tp.nature_cnn_macs(4, value_head))


def test_workload_from_hand_made_args():
    ppo = SimpleNamespace(num_envs=8, num_steps=128, num_minibatches=4, update_epochs=4)
    assert tp.workload("ppo", ppo) == PPO
    dqn = SimpleNamespace(num_envs=1, batch_size=32, train_frequency=4)
    assert tp.workload("dqn", dqn) == DQN
    a2c = SimpleNamespace(num_envs=16, num_steps=5, log_every=1000)
    assert tp.workload("a2c", a2c) == A2C
    assert [tp.min_steps(w) for w in (PPO, DQN, A2C)] == [2048, 3000, 2000]


def test_workloads_of_the_scripts_defaults():
    import dqn_atari
    import ppo_atari

    assert tp.workload("ppo", ppo_atari.Args()) == PPO  # 16 minibatch steps of 256 per 1,024 agent steps
    assert tp.workload("dqn", dqn_atari.Args()) == DQN  # one step of 32 per 4 agent steps
    if (ROOT / "a2c_atari.py").exists():
        import a2c_atari

        assert tp.workload("a2c", a2c_atari.Args()) == A2C  # one step of 80 per 80 agent steps


def test_ceilings_from_hand_made_costs():
    assert tp.update_ceiling(PPO, 0.05) == pytest.approx(1024 / (16 * 0.05))  # 1,280 agent steps/s
    assert tp.update_ceiling(DQN, 0.01) == pytest.approx(400)
    assert tp.update_ceiling(A2C, 0.1) == pytest.approx(800)
    assert tp.update_ceiling(PPO, None) is None
    assert tp.gflops_per_second(6e9, 0.5) == pytest.approx(12)

    bare = tp.bare_seconds(PPO, env_sps=2048, forward_seconds=0.002, update_seconds=0.05)
    assert bare == pytest.approx({"env": 0.5, "inference": 129 * 0.002, "update": 16 * 0.05})
    assert tp.serial_ceiling(bare) == pytest.approx(1024 / (0.5 + 0.258 + 0.8))
    bare = tp.bare_seconds(DQN, env_sps=1024, forward_seconds=0.001, update_seconds=0.01)
    assert bare == pytest.approx({"env": 1.0, "inference": 1.024, "update": 2.56})
    assert tp.serial_ceiling(bare) == pytest.approx(1024 / (1.0 + 1.024 + 2.56))
    bare = tp.bare_seconds(A2C, env_sps=None, forward_seconds=0.004, update_seconds=0.1)
    assert bare == pytest.approx({"inference": 12.8 * 6 * 0.004, "update": 12.8 * 0.1})
    assert tp.serial_ceiling(bare) is None  # no env cost measured: no serial ceiling


def test_overheads_ratios_and_medians():
    assert tp.overhead(1.5, 1.0) == pytest.approx(0.5)
    assert tp.overhead(0.9, 1.0) == pytest.approx(-0.1)
    assert tp.overhead(1.0, None) is None and tp.overhead(None, 1.0) is None
    assert tp.ratio(300, 150) == 2.0 and tp.ratio(300, None) is None and tp.ratio(None, 2) is None
    assert tp.median([3, None, 1, 2]) == 2 and tp.median([None]) is None
    runs = [{"phases": {"env": 1.0, "update": 3.0}}, {"phases": {"env": 2.0, "update": 1.0}}, {"error": "x"},
            {"phases": {"env": 9.0, "update": 2.0}}]
    assert tp.median_phases(runs) == {"env": 2.0, "update": 2.0}


def test_command_line_lists():
    assert tp.parse_list("ppo, dqn", tp.SCRIPTS, "script") == ["ppo", "dqn"]
    with pytest.raises(tp.UsageError, match="unknown script 'sac'"):
        tp.parse_list("ppo,sac", tp.SCRIPTS, "script")
    assert tp.parse_steps(None, ["ppo", "dqn"]) == {"ppo": 16_384, "dqn": 20_000}
    assert tp.parse_steps("4096", ["ppo", "a2c"]) == {"ppo": 4096, "a2c": 4096}
    assert tp.parse_steps("dqn=3000", ["ppo", "dqn"]) == {"ppo": 16_384, "dqn": 3000}
    for bad in ("many", "sac=100", "ppo=x"):
        with pytest.raises(tp.UsageError):
            tp.parse_steps(bad, ["ppo"])


def test_flags_taken_from_a_scripts_help():
    now = "usage: ppo_atari.py [--total-timesteps INT] [--eval-episodes INT] [--progress | --no-progress]\n" \
          "  --runs-dir STR  ...\n  --run-name {None}|STR"
    assert tp.our_flags(now, "ppo", 2048, "R", "n") == ["--total-timesteps", "2048", "--eval-episodes", "0",
                                                      "--no-progress", "--runs-dir", "R", "--run-name", "n"]
    old = "usage: dqn_atari.py [--total_timesteps INT] [--run_name STR]"  # an older script, underscores, fewer flags
    assert tp.our_flags(old, "dqn", 3000, "R", "n") == ["--total-timesteps", "3000", "--run-name", "n",
                                                       "--learning-starts", "1000", "--buffer-size", "100000"]
    assert not tp.has_flag("--eval-episodes-x", "--eval-episodes")


def test_report_from_hand_made_results(tmp_path):
    setup = tp.Setup(scripts=["ppo", "dqn"], sections=list(tp.SECTIONS), steps={"ppo": 2048, "dqn": 3000},
                     workloads={"ppo": PPO, "dqn": DQN}, env_id="BreakoutNoFrameskip-v4", bare_seconds=1,
                     timeout=10, tmp=tmp_path, ref="abc1234", env_backends={"ppo": "native", "dqn": "native"})
    results = tp.Results()
    results.add(("gemm", "fp32"), 100.0, 1, "GEMM fp32", "GFLOP/s")
    results.add(("update", "ppo"), 0.05, 1, "ppo bare update", "s")
    results.add(("forward", "ppo"), 0.002, 1, "ppo bare forward", "s")
    results.add(("env", "native", 8), 2048.0, 1, "env native, 8 envs", "agent steps/s")
    run = dict(sps=256.0, sps_whole=200, phases={"env": 1.0, "inference": 0.5, "update": 2.0, "other": 0.5})
    for who, sps in (("ours", 300.0), ("ours", 200.0), ("ref", 250.0), ("cleanrl", 125.0), ("sb3", 500.0)):
        results.add(("run", "ppo", who), dict(run, sps=sps), 1, f"ppo {who}", "agent steps/s", 0.1)
    results.add(("run", "dqn", "ours"), {"error": "exit status 1: boom"}, 1, "dqn ours", "agent steps/s")
    meta = dict(env_id="BreakoutNoFrameskip-v4", date="today", command="python benchmark/throughput.py", cpu="CPU",
                cores=2, torch="2.13.0", bf16=False, load_before="0", load_after="0", rounds=1, paused="")
    text = "\n".join(tp.report(setup, results, meta))
    # ours is the median of 300 and 200; the update-only ceiling 1,024 / (16 x 0.05 s) = 1,280; the serial one
    # 1,024 / (0.5 + 0.258 + 0.8) = 657
    assert "| ppo | 250 | 125 | 2.00 | 500 | 0.50 | 1,280 | 0.20 | 657 | 0.38 |" in text
    assert "0.38 of the serial ceiling (657); 0.20 of the update-only ceiling (1,280)" in text
    assert "overlap" not in text  # the scripts' rollout is serial: no overlapped ceiling
    assert "| ppo | 250 | 250 | 1.00 |" in text  # before (abc1234) and after
    assert "| update | 2.00 | 0.80 | +150% |" in text
    assert "exit status 1: boom" in text


def run_benchmark(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmark" / "throughput.py"), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--scripts", "ppo,sac"], "error: unknown script 'sac'"),
    (["--cleanrl", "no/such/folder"], "error: --cleanrl 'no/such/folder' holds no cleanrl/"),
    (["--out", "no/such/folder/table.md"], "error: --out 'no/such/folder/table.md'"),
    (["--only", "ours,speed"], "error: unknown section 'speed'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_benchmark(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_sb3_speed_prints_help_without_sb3():
    result = subprocess.run([sys.executable, str(ROOT / "benchmark" / "sb3_speed.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--algo" in result.stdout


def test_requirements_peers_pin_sb3_and_follow_ours():
    lines = (ROOT / "benchmark" / "requirements-peers.txt").read_text().splitlines()
    assert "stable-baselines3==2.9.2" in lines and "-c ../requirements.txt" in lines
    assert tp.torch_requirement() == "torch==2.13.0"


def test_a_finished_venv_build_is_reused(tmp_path):
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    (tmp_path / "venv" / "throughput-build.txt").write_text("torch==2.13.0\nx==1")
    assert tp.build_venv(tmp_path / "venv", ["x==1"], "torch==2.13.0\nx==1", tmp_path / "log") == str(python)
    assert not (tmp_path / "log").exists()  # nothing was installed


def process_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_pause_stops_and_always_resumes():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(RuntimeError):
            with tp.paused([sleeper.pid]):
                time.sleep(0.1)
                assert process_state(sleeper.pid) == "T"  # stopped
                raise RuntimeError("a measurement failed")
        time.sleep(0.1)
        assert process_state(sleeper.pid) == "S"  # running (asleep) again
        with pytest.raises(tp.UsageError, match="this benchmark or one of its parents"):
            tp.check_pause([os.getppid()])
        with pytest.raises(tp.UsageError, match="no such process"):
            tp.check_pause([2**22 + 1])
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
