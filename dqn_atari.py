"""DQN on Atari: Nature DQN with a replay memory that fits in RAM, resumes and replays, in one file.

Algorithm: Deep Q-Networks (Mnih et al. 2015, "Human-level control through deep reinforcement learning",
Nature 518; the arXiv precursor is 1312.5602): the Nature CNN regresses Q(s, a) on the one-step TD target
r + gamma * max_a' Q_target(s', a') over minibatches drawn uniformly from a replay memory, acting
epsilon-greedily; the target network is a periodic copy of the online one. `--double-dqn` uses the
target of van Hasselt et al. 2016 (arXiv 1509.06461): the online network picks a', the target network
values it.

Two sets of defaults, chosen with `--preset` and printed in full in the logged settings:
  cleanrl  CleanRL's `dqn_atari.py` (Adam 1e-4, MSE loss, target copied every 1,000 agent steps, epsilon
           1 -> 0.01 over the first 10% of the run, learning from 80,000 agent steps). Its published
           scores (mean of the last 100 training games at 10M agent steps) are the ones to compare with.
  nature   Mnih et al. 2015 as Dopamine's `dqn_nature.gin` reads it (centered RMSProp 2.5e-4, Huber
           loss, target every 10,000 agent steps, epsilon 1 -> 0.1 over 1M agent steps, learning from
           50,000 agent steps). Add `--repeat-action-probability 0.25` for Dopamine's sticky actions.
Any preset value can be overridden by its own flag.

Deliberate differences from CleanRL's file:
  - The replay memory stores each 84x84 frame once (as Dopamine does) and rebuilds the 4-frame stacks
    when it samples, so 1M transitions take 7.1 GB instead of about 26 GiB (CleanRL issue #453).
  - Episode boundaries follow gymnasium 1.x NEXT_STEP autoreset (see `wrappers.py`): the step that
    resets a finished game is not stored; a lost life or a game over stops bootstrapping; a truncation
    (the 108,000-frame cap) bootstraps from the game's last observation. (CleanRL's buffer, SB3's with
    optimize_memory_usage, reads s' from the next slot, which after a truncation holds the next game's start.)
  - Speed on CPU: uint8 frames until the network divides them by 255, no Q-values computed when every
    env explores, batch gathering into preallocated arrays, channels-last memory, torch's fused Adam,
    subnormal floats flushed to zero, and bf16 where the hardware has it (each a flag).
  - `--save-model` writes atomic checkpoints (`--save-replay` adds the replay memory), `--resume RUN_DIR`
    continues a run, `--run MODEL` replays a saved model with a video, and training ends with an
    evaluation of `--eval-episodes` games.

Usage:
    python dqn_atari.py                                   # Breakout, 10M agent steps, CleanRL's settings
    python dqn_atari.py --env-id PongNoFrameskip-v4 --preset nature --save-model
    python dqn_atari.py --resume runs/<run_name>          # continue from runs/<run_name>/checkpoint.pt
    python dqn_atari.py --run runs/<run_name>/dqn_atari.model --run-episodes 10
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import wrappers


def native_bf16() -> bool:
    """Whether bf16 matrix units exist here: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX.

    Without them torch emulates bf16 and a training step gets slower, so `--bf16` defaults to this answer.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# The values that differ between the two presets. Every one of them is also a flag of `Args` whose default
# None means "the preset's value"; `resolve_hyperparameters` makes the choice, and the settings log it.
PRESETS = {
    # CleanRL dqn_atari.py (Huang et al. 2022, JMLR 23(274)): its exploration covers 10% of the run.
    "cleanrl": dict(optimizer="adam", learning_rate=1e-4, loss="mse", target_network_frequency=1_000,
                    end_e=0.01, exploration_steps=None, learning_starts=80_000),
    # Mnih et al. 2015, Extended Data Table 1, in agent steps as Dopamine's dqn_nature.gin and DeepMind's
    # released Lua code count them.
    "nature": dict(optimizer="rmsprop", learning_rate=2.5e-4, loss="huber", target_network_frequency=10_000,
                   end_e=0.1, exploration_steps=1_000_000, learning_starts=50_000),
}


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name and of the model file name)"""
    seed: int = 1
    """seed of Python, NumPy, torch and the envs (env i gets seed + i)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use CUDA when it is available"""
    run_name: str | None = None
    """directory name under --runs-dir; default `{env_id}__{exp_name}__{seed}__{unix time}`"""
    runs_dir: str = "runs"
    """parent directory of the run directories (TensorBoard events, checkpoint.pt, the model file)"""

    env_id: str = "BreakoutNoFrameskip-v4"
    """the game (`BreakoutNoFrameskip-v4`, `ALE/Breakout-v5` or `breakout`); with --run, the model's game"""
    total_timesteps: int = 10_000_000
    """agent steps of the whole job, summed over all envs (1 agent step = 4 frames)"""
    num_envs: int = 1
    """parallel game environments; each has its own ring in the replay memory (CleanRL: 1)"""
    env_backend: str = "native"
    """`native` (ale-py's C++ vector env), `sync` or `async` (gymnasium vector envs); see wrappers.py"""
    env_threads: int = 0
    """emulator threads of the native backend (0: one per env, at most the cores of this process)"""
    torch_threads: int | None = None
    """torch intra-op threads (None: the cores available to this process); where other busy processes share
    those cores, 1 can be several times faster (benchmark/results/dqn_speed.txt)"""
    flush_denormal: bool = True
    """treat subnormal floats (below 1.2e-38) as zero on CPU (torch.set_flush_denormal): after many updates
    much of Adam's moment estimates decays into that range, where x86 arithmetic is many times slower (49%
    of them in a DQN run at 365k steps: an Adam step 13.2 ms instead of 2.1; benchmark/denormal_speed.py)"""
    repeat_action_probability: float = 0.0
    """sticky actions (Machado et al. 2018): 0 as in Mnih et al. 2015 and CleanRL, 0.25 as in Dopamine"""

    preset: Literal["cleanrl", "nature"] = "cleanrl"
    """defaults for the flags below that say "None: the preset's": `cleanrl` (CleanRL's dqn_atari.py) or
    `nature` (Mnih et al. 2015 as Dopamine's dqn_nature.gin); the settings log shows the values used"""
    optimizer: Literal["adam", "rmsprop"] | None = None
    """None: the preset's (cleanrl: adam; nature: rmsprop, centered, as DeepMind's and Dopamine's)"""
    learning_rate: float | None = None
    """optimizer step size (None: the preset's; cleanrl 1e-4, nature 2.5e-4)"""
    loss: Literal["mse", "huber"] | None = None
    """TD loss (None: the preset's; cleanrl mse; nature huber = the error clipped to [-1, 1] in the
    gradient, Mnih et al. 2015)"""
    target_network_frequency: int | None = None
    """agent steps between copies of the online network into the target network (None: the preset's;
    cleanrl 1,000, nature 10,000)"""
    end_e: float | None = None
    """final exploration epsilon (None: the preset's; cleanrl 0.01, nature 0.1)"""
    exploration_steps: int | None = None
    """agent steps over which epsilon falls linearly from start_e to end_e, counted from the start of the
    run (None: the preset's; cleanrl 10% of total_timesteps, nature 1,000,000)"""
    learning_starts: int | None = None
    """agent steps of experience collected before the first update (None: the preset's; cleanrl 80,000,
    nature 50,000); after a resume without the replay memory the memory refills this much again"""
    start_e: float = 1.0
    """initial exploration epsilon (both presets)"""
    buffer_size: int = 1_000_000
    """replay memory capacity in transitions, split evenly among the envs (both presets)"""
    batch_size: int = 32
    """transitions per update (both presets)"""
    gamma: float = 0.99
    """discount factor per agent step (both presets)"""
    train_frequency: int = 4
    """agent steps between updates, summed over envs (both presets)"""
    double_dqn: bool = False
    """Double DQN target (van Hasselt et al. 2016): the online network picks the next action"""
    rmsprop_alpha: float = 0.95
    """RMSProp decay of the squared-gradient average (Mnih et al. 2015; Dopamine's decay)"""
    rmsprop_eps: float = 0.00316
    """RMSProp epsilon; torch adds it after the square root, TensorFlow (Dopamine: 1e-5) before it, and
    sqrt(1e-5) = 0.00316 gives the same floor where the gradient variance is small"""

    channels_last: bool = True
    """NHWC memory format for the convolutions: oneDNN's fast path on CPU; with --fused-adam an update at
    batch 32 took 38.6 instead of 57.5 ms here (benchmark/results/dqn_speed.txt)"""
    bf16: bool = field(default_factory=native_bf16)
    """bf16 autocast for the network (default on only where the hardware computes bf16 natively)"""
    fused_adam: bool = True
    """torch's fused Adam kernel (with --optimizer adam; RMSProp has none): the same update in one pass over
    the parameters instead of a dozen small ops, results may differ in the last bits; at batch 32 the
    loop's Adam was a quarter of an update here (benchmark/results/dqn_speed.txt)"""
    lazy_greedy: bool = True
    """compute Q-values only when some env acts greedily this step (no effect on results, only on speed)"""
    inference_threads: int | None = None
    """torch threads for acting with a batch of num_envs observations (None: torch_threads). Measured on
    the 2-core machine (benchmark/results/dqn_speed.txt): a batch-1 forward takes 0.96 ms on 2 threads and
    1.31 ms on 1, and whole runs were faster with None than with 1; on cores that other processes keep
    busy, 1 thread can be faster"""

    save_model: bool = False
    """save the model at the end and a checkpoint every --checkpoint-every agent steps"""
    checkpoint_every: int = 500_000
    """agent steps between checkpoints (with --save-model); runs/<run_name>/checkpoint.pt is overwritten"""
    save_replay: bool = False
    """with --save-model: write the replay memory beside each checkpoint (runs/<run_name>/replay.npz,
    7,064 bytes per transition held, 7.1 GB at 1M), so that --resume continues with it"""
    resume: str | None = None
    """a run directory to continue from its checkpoint.pt (and replay.npz, when saved); settings come from
    the checkpoint, except --total-timesteps (to extend the run) and the speed flags (SPEED_FLAGS) when given"""
    eval_episodes: int = 10
    """whole games played with epsilon --eval-epsilon at the end of training, logged as eval/episodic_return
    (0: none)"""
    eval_epsilon: float = 0.05
    """exploration epsilon of the final evaluation and of --run (Mnih et al. 2015; Dopamine's newer
    configs use 0.001)"""
    run: str | None = None
    """a model file to replay instead of training: play --run-episodes games, print their scores"""
    run_episodes: int = 10
    """with --run: whole games to play"""
    video: bool = True
    """with --run: write the games to videos/<model name>.mp4 (colour screen | the agent's 84x84 input)"""
    progress: bool = True
    """show a progress bar on stderr (steps, steps/s, time left, recent score)"""


@dataclass(frozen=True)
class Hyperparameters:
    """The preset-dependent values this run uses: a flag's when given, else its preset's."""

    optimizer: str
    learning_rate: float
    loss: str
    target_network_frequency: int
    end_e: float
    exploration_steps: int
    learning_starts: int


def resolve_hyperparameters(args: Args) -> Hyperparameters:
    values = {name: getattr(args, name) if getattr(args, name) is not None else default
              for name, default in PRESETS[args.preset].items()}
    if values["exploration_steps"] is None:  # CleanRL's exploration_fraction 0.1 of the whole run
        values["exploration_steps"] = int(0.1 * args.total_timesteps)
    return Hyperparameters(**values)


class QNetwork(nn.Module):
    """The Nature CNN (Mnih et al. 2015): three convolutions, 512 hidden units, one Q-value per action.

    Takes uint8 frames (N, 4, 84, 84) and scales them to [0, 1] itself, so the replay memory and the
    batches stay 4x smaller. PyTorch's default initialization, as in CleanRL.
    """

    def __init__(self, num_actions: int, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.network = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 512),
            nn.ReLU(),
            nn.Linear(512, num_actions),
        )
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values (N, num_actions), float32 even under autocast."""
        x = obs.float() / 255.0
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.network(x).float()


def td_target(
    rewards: torch.Tensor,
    next_q_target: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """The one-step TD target y = r + gamma * (1 - terminated) * Q_target(s', a').

    rewards, terminated: (B,); next_q_target, next_q_online: (B, A), Q-values of s' by the target and the
    online network. a' = argmax_a Q_target(s', a) (Mnih et al. 2015), or with next_q_online given,
    argmax_a Q_online(s', a) (double DQN, van Hasselt et al. 2016). terminated is a life lost or a game
    over; a truncated transition carries terminated False and so bootstraps from its s'.
    """
    if next_q_online is None:
        next_values = next_q_target.max(dim=1).values
    else:
        next_values = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + gamma * (1.0 - terminated.float()) * next_values


def td_loss(q_taken: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean TD loss: "mse" (CleanRL) or "huber", quadratic within 1 of the target and linear beyond,
    i.e. the TD error clipped to [-1, 1] in the gradient (Mnih et al. 2015)."""
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, targets, beta=1.0)
    return F.mse_loss(q_taken, targets)


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """`start` at step t = 0, moving linearly to `end` at t = duration, then `end` (the epsilon schedule)."""
    if duration <= 0:
        return end
    return start + (end - start) * min(t / duration, 1.0)


class ReplayMemory:
    """Dopamine-style replay memory: each 84x84 frame stored once, the 4-frame stacks rebuilt on sampling.

    Each env has its own ring of `capacity // num_envs` slots; the envs step together, so one cursor
    serves all rings. Slot i of env e holds the newest frame of an observation s_i, then, once the step is
    taken, the action a_i, its (sign-clipped) reward r_i and terminated_i; s_{i+1}'s newest frame is in
    slot i+1. A stack is the frames of slots i-3..i, with zeros in place of any frame before the start of
    the game, as the env pads them at reset. So a transition is 5 frames, slots i-3..i+1: s = the first
    four, s' = the last four.
    """

    FRAMES_PER_SAMPLE = wrappers.FRAME_STACK + 1

    def __init__(self, capacity: int, num_envs: int, frame_shape: tuple[int, int] = (84, 84)):
        self.num_envs = num_envs
        self.size = capacity // num_envs  # slots per env ring
        self.frame_shape = frame_shape
        # Done-flag convention: terminated[i] = a life was lost or the game ended after a_i: the target does
        # not bootstrap; a truncation is stored with terminated False and bootstraps from s_{i+1}, the
        # game's last observation. game_start[i] = frame i is the first of a game: frames before it are
        # zeros in a stack (a lost life is not a game start: the game and its frame stack go on).
        # taken[i] = a_i was really played from s_i; it is False for the last frame of a finished game,
        # whose next step is the env's reset step (action ignored, not stored), and for the newest slot.
        self.frames = np.zeros((num_envs, self.size, *frame_shape), dtype=np.uint8)
        self.actions = np.zeros((num_envs, self.size), dtype=np.uint8)
        self.rewards = np.zeros((num_envs, self.size), dtype=np.float32)
        self.terminated = np.zeros((num_envs, self.size), dtype=bool)
        self.game_start = np.zeros((num_envs, self.size), dtype=bool)
        self.taken = np.zeros((num_envs, self.size), dtype=bool)
        self.cursor = 0  # the slot the next frame goes to
        self.frames_added = 0  # frames written per env since the memory was empty
        self._batch_frames: np.ndarray | None = None

    @staticmethod
    def bytes_per_transition() -> int:
        """Bytes stored per transition: one frame, action, reward and three flags."""
        return 84 * 84 + 1 + 4 + 1 + 1 + 1

    def add_observation(self, newest_frames: np.ndarray, game_start: np.ndarray) -> None:
        """Store the newest frame (N, 84, 84) of every env's current observation."""
        i = self.cursor
        self.frames[:, i] = newest_frames
        self.game_start[:, i] = game_start
        self.taken[:, i] = False
        self.cursor = (i + 1) % self.size
        self.frames_added += 1

    def add_step(self, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, taken: np.ndarray) -> None:
        """Store the step played from the observations of the last add_observation, before the next one."""
        i = (self.cursor - 1) % self.size
        self.actions[:, i] = actions
        self.rewards[:, i] = rewards
        self.terminated[:, i] = terminated
        self.taken[:, i] = taken

    def add(self, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, next_frames: np.ndarray,
            reset_step: np.ndarray) -> None:
        """Store one env step of every env: the step from the stored observation, then the next frame.

        reset_step: the step was a NEXT_STEP autoreset step (the previous step ended the game): its action
        was ignored, so it is not a transition, and its observation is the first of a new game.
        """
        self.add_step(actions, rewards, terminated, taken=~reset_step)
        self.add_observation(next_frames, game_start=reset_step)

    def sample_range(self) -> tuple[int, int]:
        """Ages (0 = oldest frame held) a transition may have: [low, high).

        Its next frame must be written (age <= newest - 1), and when the ring has wrapped, the three frames
        before it must still be held (age >= 3): older ones were overwritten.
        """
        held = min(self.frames_added, self.size)
        low = wrappers.FRAME_STACK - 1 if self.frames_added > self.size else 0
        return low, held - 1

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A uniform minibatch: frames (B, 5, 84, 84) uint8 with s = [:, :4] and s' = [:, 1:], actions,
        rewards and terminated (B,). Draws with np.random; never crosses an env's ring or a game start."""
        low, high = self.sample_range()
        if high <= low:
            raise RuntimeError("the replay memory holds no transition yet")
        oldest = self.cursor if self.frames_added > self.size else 0
        envs = np.random.randint(self.num_envs, size=batch_size)
        slots = (oldest + np.random.randint(low, high, size=batch_size)) % self.size
        for _ in range(1000):  # redraw the rare slots whose action was never played (ends of games)
            bad = ~self.taken[envs, slots]
            if not bad.any():
                break
            n = int(bad.sum())
            envs[bad] = np.random.randint(self.num_envs, size=n)
            slots[bad] = (oldest + np.random.randint(low, high, size=n)) % self.size
        else:
            raise RuntimeError("the replay memory holds no playable transition")

        window = (slots[:, None] + np.arange(-3, 2)) % self.size  # slots i-3 .. i+1
        if self._batch_frames is None or len(self._batch_frames) != batch_size:
            self._batch_frames = np.empty((batch_size, self.FRAMES_PER_SAMPLE, *self.frame_shape), np.uint8)
        flat = self.frames.reshape(-1, *self.frame_shape)
        np.take(flat, envs[:, None] * self.size + window, axis=0, out=self._batch_frames, mode="clip")
        # Frame i-3+w (w = 0..2) belongs to an earlier game when a game starts at any later slot up to i.
        starts = self.game_start[envs[:, None], window[:, 1:4]]
        earlier_game = np.flip(np.logical_or.accumulate(np.flip(starts, 1), axis=1), 1)
        self._batch_frames[:, :3][earlier_game] = 0
        return self._batch_frames, self.actions[envs, slots], self.rewards[envs, slots], self.terminated[envs, slots]

    ARRAYS = ("frames", "actions", "rewards", "terminated", "game_start", "taken")

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the memory, as plain arrays (for np.savez / np.load without pickle).
        Until the rings wrap, only their written slots: a file of 100k transitions is 0.7 GB, not 7."""
        held = min(self.frames_added, self.size)
        return dict({name: getattr(self, name)[:, :held] for name in self.ARRAYS},
                    counters=np.array([self.cursor, self.frames_added, self.num_envs, self.size], dtype=np.int64))

    def load_state(self, state) -> None:
        cursor, frames_added, num_envs, size = (int(v) for v in state["counters"][:4])
        if (num_envs, size) != (self.num_envs, self.size):
            raise ValueError(f"replay memory of {num_envs} rings x {size} slots, expected {self.num_envs} x {self.size}")
        held = min(frames_added, size)
        for name in self.ARRAYS:
            saved = state[name]
            if saved.shape[1] != held and saved.shape[1] != size:
                raise ValueError(f"replay array '{name}' holds {saved.shape[1]} slots, its counters say {held}")
            if saved.shape[1] < size:
                # Unwritten slots are zero, as in a new memory; np.zeros leaves their pages untouched.
                full = np.zeros(getattr(self, name).shape, saved.dtype)
                full[:, :held] = saved
                saved = full
            setattr(self, name, saved)
        self.cursor, self.frames_added = cursor, frames_added


def fail(msg: str) -> None:
    """End the process on a user's mistake: one line on stderr, exit status 2, no traceback."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


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
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration of the training loop "
              f"(send it again to stop at once)", file=sys.stderr)

    def report(self, global_step: int, checkpoint_dir: str | None, quiet: bool = False) -> None:
        """Say (unless quiet) where the run stopped and how to go on, then exit with 128 + the signal's number."""
        saved = (f"checkpoint saved; continue with --resume {checkpoint_dir}" if checkpoint_dir is not None
                 else "nothing saved (train with --save-model to keep checkpoints)")
        if not quiet:
            print(f"stopped by {signal.Signals(self.signal).name} at agent step {global_step}: {saved}",
                  file=sys.stderr)
        sys.exit(128 + self.signal)


def given_on_command_line(flag: str) -> bool:
    """Whether `--flag` (or `--flag=...`, `--no-flag`, in either spelling) was typed, as opposed to defaulted."""
    spellings = {f"--{prefix}{name}" for prefix in ("", "no-", "no_") for name in (flag, flag.replace("-", "_"))}
    return any(a.split("=", 1)[0] in spellings for a in sys.argv[1:])


# Settings that change how fast a run goes, not what it computes: --resume takes them from the command line
# when given there (a run may continue on another machine), and every other setting from the checkpoint.
SPEED_FLAGS = ("cuda", "env_backend", "env_threads", "torch_threads", "inference_threads", "channels_last", "bf16",
               "fused_adam", "flush_denormal", "lazy_greedy")


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to path + ".tmp", then rename: a crash never leaves a half-written file behind."""
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def save_replay_atomic(memory: ReplayMemory, global_step: int, path: str) -> None:
    """np.savez (uncompressed, no pickles) to path + ".tmp", then rename."""
    with open(path + ".tmp", "wb") as f:
        np.savez(f, global_step=np.array(global_step, dtype=np.int64), **memory.state())
    os.replace(path + ".tmp", path)


def load_file(path: str, what: str, device: torch.device) -> dict:
    """torch.load a model or checkpoint file written by this script, or fail with one line."""
    if not os.path.isfile(path):
        fail(f"{what} '{path}' does not exist")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file raises any of pickle's, zip's or torch's errors
        fail(f"cannot read {what} '{path}': not a file saved by dqn_atari.py ({type(e).__name__})")
    if not isinstance(data, dict) or data.get("format") != 1 or "model" not in data:
        fail(f"{what} '{path}' is not a model file of this project (no format-1 'model' entry)")
    if data.get("algo") != "dqn":
        fail(f"{what} '{path}' holds a '{data.get('algo')}' model; replay it with {data.get('algo')}_atari.py")
    return data


def rng_states() -> dict:
    """Python, NumPy and torch random states as plain types and tensors (loadable with weights_only)."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, key.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def model_file(args: Args, q_network: QNetwork, num_actions: int) -> dict:
    """The contract's model file: enough to replay the agent and to know what it was trained on."""
    return {
        "format": 1,
        "algo": "dqn",
        "env_id": args.env_id,
        "num_actions": int(num_actions),
        "model": {k: v.detach().cpu() for k, v in q_network.state_dict().items()},
        "args": dataclasses.asdict(args),
    }


def settings_table(settings: dict) -> str:
    return "|setting|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in settings.items())


def epsilon_greedy(q_network: QNetwork, obs: np.ndarray, epsilon: float, num_actions: int, device: torch.device,
                   autocast, lazy: bool = True) -> np.ndarray:
    """Actions for a batch of observations: uniform with probability epsilon, else argmax Q.

    The random draws come first and are the same whether or not Q is computed, so `lazy` (skip the
    network when every env explores) changes the speed only.
    """
    explore = np.random.random(len(obs)) < epsilon
    actions = np.random.randint(num_actions, size=len(obs))
    if explore.all() and lazy:
        return actions
    with torch.inference_mode(), autocast:
        greedy = q_network(torch.from_numpy(obs).to(device)).argmax(dim=1).cpu().numpy()
    return np.where(explore, actions, greedy)


def evaluate(args: Args, q_network: QNetwork, num_actions: int, device: torch.device, autocast) -> list[float]:
    """Raw scores of args.eval_episodes whole games played epsilon-greedily with args.eval_epsilon.

    The games run on up to 8 envs of the training preprocessing, seeded after the training envs; each env
    plays a fixed share of the games, so short games are not over-represented.
    """
    num_envs = min(args.eval_episodes, 8)
    quota = np.array([args.eval_episodes // num_envs + (i < args.eval_episodes % num_envs) for i in range(num_envs)])
    envs = wrappers.make_vector_env(args.env_id, num_envs, backend=args.env_backend,
                                    repeat_action_probability=args.repeat_action_probability)
    obs, _ = envs.reset(seed=args.seed + args.num_envs)
    played, scores = np.zeros(num_envs, dtype=int), []
    q_network.eval()
    while (played < quota).any():
        actions = epsilon_greedy(q_network, obs, args.eval_epsilon, num_actions, device, autocast)
        obs, _, _, _, info = envs.step(actions)
        if "_episode" in info and info["_episode"].any():
            for i in np.flatnonzero(info["_episode"]):
                if played[i] < quota[i]:
                    scores.append(float(info["episode"]["r"][i]))
                    played[i] += 1
    envs.close()
    return scores


def replay(args: Args, device: torch.device) -> None:
    """--run: play whole games with a saved model, print each raw score and mean +- std, write a video.

    Actions are epsilon-greedy with --eval-epsilon (0.05, Mnih et al. 2015): a purely greedy agent can
    loop forever in a state it never learned to leave (in Breakout, waiting to serve). Preprocessing is
    the training one (wrappers.make_env), without life loss or reward clipping, so a game is a whole game
    and the score is the game's.
    """
    import cv2

    saved = load_file(args.run, "model file", device)
    env_id = saved["env_id"]
    if given_on_command_line("env-id") and wrappers.resolve_game(args.env_id) != wrappers.resolve_game(env_id):
        fail(f"model '{args.run}' was trained on {env_id}, not {args.env_id}; drop --env-id or pick its model")
    env = wrappers.make_env(env_id, args.seed, episodic_life=False, clip_reward=False, render_mode="rgb_array",
                            repeat_action_probability=args.repeat_action_probability)
    if env.action_space.n != saved["num_actions"]:
        fail(f"model '{args.run}' has {saved['num_actions']} actions but {env_id} has {env.action_space.n}")
    q_network = QNetwork(saved["num_actions"], channels_last=args.channels_last).to(device)
    try:
        q_network.load_state_dict(saved["model"])
    except RuntimeError:
        fail(f"model '{args.run}' does not fit the Nature CNN of dqn_atari.py (different layer shapes)")
    q_network.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    writer = None
    if args.video:
        os.makedirs("videos", exist_ok=True)
        video_path = os.path.join("videos", os.path.splitext(os.path.basename(args.run))[0] + ".mp4")
        scale = 2  # the 160x210 screen doubled; the 84x84 input enlarged to the same height, side by side
        height = 210 * scale
        size = (160 * scale + height, height)
        fps = 60 / wrappers.FRAME_SKIP  # one video frame per agent step plays at real game speed
        writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)

    def write_frame(obs: np.ndarray, game: int, score: float) -> None:
        screen = cv2.resize(env.render(), (160 * scale, height), interpolation=cv2.INTER_NEAREST)
        agent_view = cv2.resize(obs[-1], (height, height), interpolation=cv2.INTER_NEAREST)
        frame = np.concatenate([cv2.cvtColor(screen, cv2.COLOR_RGB2BGR), cv2.cvtColor(agent_view, cv2.COLOR_GRAY2BGR)], 1)
        cv2.putText(frame, f"game {game}  score {score:g}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
        writer.write(frame)

    scores = []
    for game in range(1, args.run_episodes + 1):
        obs, _ = env.reset()
        score, length, done = 0.0, 0, False
        while not done:
            if writer is not None:
                write_frame(obs, game, score)
            action = epsilon_greedy(q_network, np.asarray(obs)[None], args.eval_epsilon, saved["num_actions"],
                                    device, autocast)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            score, length, done = score + float(reward), length + 1, terminated or truncated
        if writer is not None:
            write_frame(obs, game, score)
        scores.append(score)
        print(f"game {game}: score {score:g} ({length} agent steps)", flush=True)
    env.close()
    print(f"mean {np.mean(scores):.2f} +- {np.std(scores):.2f} (std) over {len(scores)} games of {env_id}")
    if writer is not None:
        writer.release()
        print(f"video: {video_path}")


def check_args(args: Args, hp: Hyperparameters) -> None:
    """Fail with one line on settings that cannot run."""
    if args.num_envs < 1:
        fail(f"--num-envs must be at least 1, got {args.num_envs}")
    if args.total_timesteps < 1:
        fail(f"--total-timesteps must be positive, got {args.total_timesteps}")
    if args.batch_size < 1 or args.train_frequency < 1 or hp.target_network_frequency < 1:
        fail("--batch-size, --train-frequency and --target-network-frequency must be at least 1")
    if args.buffer_size // args.num_envs < 2 * wrappers.FRAME_STACK:
        fail(f"--buffer-size {args.buffer_size} is too small for {args.num_envs} envs: give each at least "
             f"{2 * wrappers.FRAME_STACK} transitions")
    if hp.learning_starts < args.batch_size:
        fail(f"--learning-starts {hp.learning_starts} must be at least --batch-size {args.batch_size}")
    if not 0.0 <= args.eval_epsilon <= 1.0 or not 0.0 <= hp.end_e <= 1.0 or not 0.0 <= args.start_e <= 1.0:
        fail("epsilons (--start-e, --end-e, --eval-epsilon) must lie in [0, 1]")
    if args.eval_episodes < 0 or args.run_episodes < 1:
        fail("--eval-episodes must be at least 0 and --run-episodes at least 1")
    if not 0.0 <= args.repeat_action_probability < 1.0:
        fail(f"--repeat-action-probability must lie in [0, 1), got {args.repeat_action_probability}")
    if args.checkpoint_every < 1:
        fail(f"--checkpoint-every must be at least 1 agent step, got {args.checkpoint_every}")
    if args.save_replay and not args.save_model:
        fail("--save-replay saves the replay memory with the checkpoints: add --save-model")
    try:
        wrappers.resolve_game(args.env_id)
    except wrappers.EnvIdError as e:
        fail(str(e))


def main() -> None:
    args = tyro.cli(Args)

    use_cuda = args.cuda and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch_threads = args.torch_threads or cores
    torch.set_num_threads(torch_threads)  # the update is CPU-bound on a CPU: use exactly our cores, no more
    torch.set_flush_denormal(args.flush_denormal)  # subnormal floats: see Args.flush_denormal
    torch.backends.cudnn.deterministic = args.torch_deterministic

    if args.run is not None:
        try:
            replay(args, device)
        except wrappers.EnvIdError as e:
            fail(str(e))
        return

    global_step, checkpoint = 0, None
    if args.resume is not None:
        checkpoint = load_file(os.path.join(args.resume, "checkpoint.pt"), "checkpoint", torch.device("cpu"))
        saved = dict(checkpoint["args"], resume=args.resume, progress=args.progress)
        for name in ("total_timesteps",) + SPEED_FLAGS:
            if given_on_command_line(name.replace("_", "-")):
                saved[name] = getattr(args, name)
        args = Args(**saved)
        global_step = checkpoint["global_step"]
    hp = resolve_hyperparameters(args)
    check_args(args, hp)
    stop = StopRequest()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    run_name = args.run_name or f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = args.resume or os.path.join(args.runs_dir, run_name)
    replay_path = os.path.join(run_dir, "replay.npz")

    envs = wrappers.make_vector_env(
        args.env_id,
        args.num_envs,
        backend=args.env_backend,
        num_threads=args.env_threads or max(1, min(args.num_envs, cores)),
        repeat_action_probability=args.repeat_action_probability,
    )
    num_actions = int(envs.single_action_space.n)  # a numpy integer would not load with weights_only
    q_network = QNetwork(num_actions, channels_last=args.channels_last).to(device)
    target_network = QNetwork(num_actions, channels_last=args.channels_last).to(device)
    if hp.optimizer == "adam":
        optimizer = torch.optim.Adam(q_network.parameters(), lr=hp.learning_rate, fused=args.fused_adam or None)
    else:  # centered RMSProp without momentum, as DeepMind's code and Dopamine's dqn_nature.gin
        optimizer = torch.optim.RMSprop(q_network.parameters(), lr=hp.learning_rate, alpha=args.rmsprop_alpha,
                                        eps=args.rmsprop_eps, centered=True)
    memory = ReplayMemory(args.buffer_size, args.num_envs)
    learning_begins = hp.learning_starts  # in global agent steps
    if checkpoint is not None:
        q_network.load_state_dict(checkpoint["model"])
        target_network.load_state_dict(checkpoint["target_model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if hp.optimizer == "adam":
            optimizer.param_groups[0]["fused"] = args.fused_adam or None  # loading restores the saved choice
        set_rng_states(checkpoint["rng"])
        learning_begins = global_step + hp.learning_starts
        if os.path.isfile(replay_path):
            try:
                with np.load(replay_path, allow_pickle=False) as replay_state:
                    if int(replay_state["global_step"]) != global_step:
                        raise ValueError(f"it is from step {int(replay_state['global_step'])}, the checkpoint from {global_step}")
                    memory.load_state(replay_state)
                learning_begins = hp.learning_starts  # the memory holds what it held: no new warm-up
            except (OSError, ValueError, KeyError) as e:
                print(f"warning: not using the replay memory '{replay_path}' ({e}); refilling it for "
                      f"{hp.learning_starts} agent steps", file=sys.stderr)
    else:
        target_network.load_state_dict(q_network.state_dict())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    inference_threads = args.inference_threads or torch_threads

    from torch.utils.tensorboard import SummaryWriter

    os.makedirs(run_dir, exist_ok=True)
    # On resume, purge_step drops events the interrupted run wrote after its checkpoint.
    writer = SummaryWriter(run_dir, purge_step=global_step if checkpoint is not None else None)
    settings = dict(dataclasses.asdict(args), **{f"used_{k}": v for k, v in dataclasses.asdict(hp).items()},
                    run_dir=run_dir, device=str(device), torch_threads=torch_threads,
                    inference_threads=inference_threads, replay_slots_per_env=memory.size, start_step=global_step)
    writer.add_text("settings", settings_table(settings), global_step)

    # Emulators cannot be snapshotted: a resumed run starts new games, seeded from the seed and the step.
    obs, _ = envs.reset(seed=args.seed + global_step)
    # Every env starts a game; any unfinished step stored before a resume is marked unplayed by this.
    memory.add_observation(obs[:, -1], game_start=np.ones(args.num_envs, dtype=bool))
    resetting = np.zeros(args.num_envs, dtype=bool)  # this step is a reset step (NEXT_STEP autoreset)

    recent_returns: list[float] = []  # raw scores of the last 100 games
    time_env = time_inference = time_replay = time_update = 0.0
    start_time, start_step = time.perf_counter(), global_step
    next_checkpoint = (global_step // args.checkpoint_every + 1) * args.checkpoint_every
    next_log = global_step
    num_updates, loss, q_taken = 0, None, None
    progress = None
    if args.progress:
        from tqdm import tqdm

        progress = tqdm(total=args.total_timesteps, initial=global_step, unit="step", unit_scale=True,
                        dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def save_checkpoint() -> None:
        if args.save_replay:  # first the memory, then the checkpoint that names its step
            save_replay_atomic(memory, global_step, replay_path)
        save_atomic(dict(model_file(args, q_network, num_actions), target_model=target_network.state_dict(),
                         optimizer=optimizer.state_dict(), global_step=global_step, rng=rng_states(),
                         run_name=run_name), os.path.join(run_dir, "checkpoint.pt"))

    while global_step < args.total_timesteps:
        t0 = time.perf_counter()
        epsilon = linear_schedule(args.start_e, hp.end_e, hp.exploration_steps, global_step)
        if inference_threads != torch_threads:
            torch.set_num_threads(inference_threads)
        actions = epsilon_greedy(q_network, obs, epsilon, num_actions, device, autocast, lazy=args.lazy_greedy)
        if inference_threads != torch_threads:
            torch.set_num_threads(torch_threads)
        t1 = time.perf_counter()
        obs, rewards, terminated, truncated, info = envs.step(actions)
        t2 = time.perf_counter()
        memory.add(actions, rewards, terminated, obs[:, -1], reset_step=resetting)
        resetting = wrappers.reset_next(terminated, truncated, info)
        previous_step, global_step = global_step, global_step + args.num_envs
        if "_episode" in info and info["_episode"].any():
            for i in np.flatnonzero(info["_episode"]):
                score, length = float(info["episode"]["r"][i]), int(info["episode"]["l"][i])
                recent_returns = (recent_returns + [score])[-100:]
                writer.add_scalar("charts/episodic_return", score, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
        time_inference += t1 - t0
        time_env += t2 - t1

        if global_step > learning_begins:
            # One update per train_frequency agent steps, so several envs keep CleanRL's replay ratio.
            for _ in range(global_step // args.train_frequency - previous_step // args.train_frequency):
                t0 = time.perf_counter()
                b_frames, b_actions, b_rewards, b_terminated = memory.sample(args.batch_size)
                b_frames = torch.from_numpy(b_frames).to(device, non_blocking=True)
                b_actions = torch.from_numpy(b_actions).to(device).long()
                b_rewards = torch.from_numpy(b_rewards).to(device)
                b_terminated = torch.from_numpy(b_terminated).to(device)
                t1 = time.perf_counter()
                b_obs, b_next_obs = b_frames[:, :-1], b_frames[:, 1:]
                with torch.no_grad(), autocast:
                    next_q_target = target_network(b_next_obs)
                    next_q_online = q_network(b_next_obs) if args.double_dqn else None
                targets = td_target(b_rewards, next_q_target, b_terminated, args.gamma, next_q_online)
                with autocast:
                    q_taken = q_network(b_obs).gather(1, b_actions.unsqueeze(1)).squeeze(1)
                loss = td_loss(q_taken, targets, hp.loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                num_updates += 1
                t2 = time.perf_counter()
                time_replay += t1 - t0
                time_update += t2 - t1
            if global_step // hp.target_network_frequency != previous_step // hp.target_network_frequency:
                target_network.load_state_dict(q_network.state_dict())

        if global_step >= next_log or global_step >= args.total_timesteps:
            next_log = global_step + 1_000
            sps = int((global_step - start_step) / (time.perf_counter() - start_time))
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/epsilon", epsilon, global_step)
            writer.add_scalar("charts/learning_rate", hp.learning_rate, global_step)
            if loss is not None:
                writer.add_scalar("losses/td_loss", loss.item(), global_step)
                writer.add_scalar("losses/q_values", q_taken.mean().item(), global_step)
            writer.add_scalar("time/env", time_env, global_step)
            writer.add_scalar("time/inference", time_inference, global_step)
            writer.add_scalar("time/replay", time_replay, global_step)
            writer.add_scalar("time/update", time_update, global_step)
            if progress is not None:
                progress.update(global_step - progress.n)
                score = f"{np.mean(recent_returns):.1f}" if recent_returns else "-"
                progress.set_postfix_str(f"score(100)={score} eps={epsilon:.3f} env={time_env:.0f}s "
                                         f"inf={time_inference:.0f}s rep={time_replay:.0f}s upd={time_update:.0f}s",
                                         refresh=False)
        if args.save_model and global_step >= next_checkpoint:
            save_checkpoint()
            next_checkpoint = (global_step // args.checkpoint_every + 1) * args.checkpoint_every
        if stop.signal is not None and global_step < args.total_timesteps:
            break

    stop.loop_done = True
    if progress is not None:
        progress.close()
    envs.close()
    sps = (global_step - start_step) / (time.perf_counter() - start_time)
    print(f"{global_step - start_step} agent steps at {sps:.0f} steps/s (env {time_env:.1f}s, inference "
          f"{time_inference:.1f}s, replay {time_replay:.1f}s, update {time_update:.1f}s, {num_updates} updates)",
          file=sys.stderr)
    if global_step < args.total_timesteps:  # stopped by StopRequest: a checkpoint, no final model, no evaluation
        if args.save_model:
            save_checkpoint()
        writer.close()
        stop.report(global_step, run_dir if args.save_model else None)
    if args.save_model:
        save_checkpoint()
        path = os.path.join(run_dir, f"{args.exp_name}.model")
        save_atomic(model_file(args, q_network, num_actions), path)
        print(f"model saved to {path}", file=sys.stderr)
    if args.eval_episodes > 0:
        scores = evaluate(args, q_network, num_actions, device, autocast)
        for score in scores:
            writer.add_scalar("eval/episodic_return", score, global_step)
        print(f"evaluation: mean {np.mean(scores):.2f} +- {np.std(scores):.2f} (std) over {len(scores)} games "
              f"with epsilon {args.eval_epsilon}", file=sys.stderr)
    writer.close()


if __name__ == "__main__":
    main()
