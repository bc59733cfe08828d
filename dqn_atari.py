"""DQN on Atari: Nature DQN with a replay memory that fits in RAM, in one file that reads as the algorithm.

Algorithm: Deep Q-Networks (Mnih et al. 2015, "Human-level control through deep reinforcement learning",
Nature 518; the arXiv precursor is 1312.5602): the Nature CNN regresses Q(s, a) on the one-step TD target
r + gamma * max_a' Q_target(s', a') over minibatches drawn uniformly from a replay memory, acting
epsilon-greedily; the target network is a periodic copy of the online one. `--double-dqn` uses the
target of van Hasselt et al. 2016 (arXiv 1509.06461): the online network picks a', the target network
values it.

Two sets of defaults, chosen with `--preset` (a flag typed wins over either) and printed in full in the
logged settings:
  cleanrl  The flags' own defaults: CleanRL's `dqn_atari.py` (Adam 1e-4, MSE loss, target copied every 1,000
           agent steps, epsilon 1 -> 0.01 over the first 10% of the run, learning from 80,000 agent steps).
           Its published scores (mean of the last 100 training games at 10M agent steps) are the ones to
           compare with.
  nature   Mnih et al. 2015 as Dopamine's `dqn_nature.gin` reads it; sets these seven flags and no other:
           centered RMSProp 2.5e-4, Huber loss, target every 10,000 agent steps, epsilon 1 -> 0.1 over 1M
           agent steps, learning from 50,000 agent steps. Add `--repeat-action-probability 0.25` for
           Dopamine's sticky actions.

Deliberate differences from CleanRL's file:
  - The replay memory stores each 84x84 frame once (as Dopamine does) and rebuilds the 4-frame stacks
    when it samples, so 1M transitions take 7.1 GB instead of about 26 GiB (CleanRL issue #453).
  - Episode boundaries follow gymnasium 1.x NEXT_STEP autoreset (see `wrappers.py`): the step that
    resets a finished game is not stored; a lost life or a game over stops bootstrapping; a truncation
    (the 108,000-frame cap) bootstraps from the game's last observation. (CleanRL's buffer, SB3's with
    optimize_memory_usage, reads s' from the next slot, which after a truncation holds the next game's start.)
  - Speed on CPU: uint8 frames until the network divides them by 255, no Q-values computed when every
    env explores (`--lazy-greedy`), batch gathering into preallocated arrays, and the speed flags of
    `harness.RunArgs` (channels-last, fused Adam, flushed denormals, bf16 where the hardware has it) on
    by default.
  - The run around the algorithm is `harness.py`: checkpoints and `--resume` (`--save-replay` adds the
    replay memory), Ctrl-C, evaluation every `--eval-every` agent steps, and `--run MODEL` (or `--run
    random`) with a video; evaluation and `--run` act epsilon-greedily with `--eval-epsilon`. DQN learns
    in one process: it does not run under torchrun.

Usage:
    python dqn_atari.py                                   # Breakout, 10M agent steps, CleanRL's settings
    python dqn_atari.py --env-id PongNoFrameskip-v4 --preset nature
    python dqn_atari.py --resume runs/<run_name>          # continue from runs/<run_name>/checkpoint.pt
    python dqn_atari.py --run runs/<run_name>/dqn_atari.model --run-episodes 10
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import harness
import wrappers


@dataclass
class Args(harness.RunArgs):
    """DQN's settings; the run's (game, steps, envs, files, evaluation, speed) are in harness.RunArgs."""

    # What --preset sets, unless the flag is typed (harness.apply_preset). `cleanrl` is the published defaults:
    # CleanRL dqn_atari.py (Huang et al. 2022, JMLR 23(274)).
    PRESETS: ClassVar[dict[str, dict]] = {
        "cleanrl": {},
        # Mnih et al. 2015, Extended Data Table 1, in agent steps as Dopamine's dqn_nature.gin and DeepMind's
        # released Lua code count them.
        "nature": dict(optimizer="rmsprop", learning_rate=2.5e-4, loss="huber", target_network_frequency=10_000,
                       end_e=0.1, exploration_steps=1_000_000, learning_starts=50_000),
    }
    preset: Literal["cleanrl", "nature"] = "cleanrl"
    """`cleanrl`: the defaults below (CleanRL's dqn_atari.py). `nature`, Mnih et al. 2015 as Dopamine's dqn_nature.gin
    reads it: --optimizer rmsprop --learning-rate 2.5e-4 --loss huber --target-network-frequency 10000 --end-e 0.1
    --exploration-steps 1000000 --learning-starts 50000; any flag typed wins"""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """adam (CleanRL) or rmsprop, centered, without momentum, as DeepMind's code and Dopamine's (`nature`)"""
    learning_rate: float = 1e-4
    """optimizer step size (CleanRL; `nature`: Mnih et al. 2015's)"""
    loss: Literal["mse", "huber"] = "mse"
    """TD loss: mse (CleanRL) or huber, the TD error clipped to [-1, 1] in the gradient (Mnih et al. 2015; `nature`)"""
    target_network_frequency: int = 1_000
    """agent steps between copies of the online network to the target (CleanRL; `nature`: Mnih et al. 2015's)"""
    end_e: float = 0.01
    """final exploration epsilon (CleanRL; `nature`: Mnih et al. 2015's)"""
    exploration_steps: tyro.conf.DisallowNone[int | None] = None
    """agent steps over which epsilon falls linearly to end_e (None: 10% of --total-timesteps, as CleanRL's
    exploration_fraction 0.1; `nature`: Mnih et al. 2015's)"""
    learning_starts: int = 80_000
    """agent steps of experience before the first update (CleanRL; `nature`: Mnih et al. 2015's)"""
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
    """RMSProp epsilon, added after the square root: sqrt(1e-5), Dopamine's eps, which TensorFlow adds inside it"""
    lazy_greedy: bool = True
    """compute Q-values only when some env acts greedily this step (the same results, only faster; a speed flag)"""
    save_replay: bool = False
    """also save the replay memory (replay.npz, 7.1 GB at 1M) so that --resume need not refill it"""
    eval_epsilon: float = 0.05
    """epsilon of evaluation and --run (Mnih et al. 2015): a greedy agent can loop forever (Breakout, waiting to serve)"""

    num_envs: int = 1
    """parallel game environments; each has its own ring in the replay memory (CleanRL: 1)"""


def exploration_duration(exploration_steps: int | None, total_timesteps: int) -> int:
    """Agent steps of the epsilon schedule: --exploration-steps, or where it is None, CleanRL's exploration_fraction
    0.1 of the whole job (so a resume with a new --total-timesteps stretches it)."""
    return exploration_steps if exploration_steps is not None else int(0.1 * total_timesteps)


def fill_from_preset(args: Args) -> Args:
    """The settings of a run resumed from a checkpoint written before the presets' values were the flags' own
    defaults: there a preset's flag that was not typed was saved as None, meaning "the preset's value", and here
    it takes the value that run used (its preset's, else the default, which is the `cleanrl` preset's). A
    checkpoint of today's script has no such None (--exploration-steps None cannot be typed) and passes unchanged."""
    defaults = {f.name: f.default for f in dataclasses.fields(Args)}
    preset = Args.PRESETS[args.preset]
    names = set().union(*Args.PRESETS.values())  # the flags a preset sets
    return dataclasses.replace(args, **{name: preset.get(name, defaults[name]) for name in names
                                        if getattr(args, name) is None})


class QNetwork(nn.Module):
    """The Nature CNN (Mnih et al. 2015): three convolutions, 512 hidden units, one Q-value per action.

    Takes uint8 frames (N, 4, 84, 84) and scales them to [0, 1] itself, so the replay memory and the
    batches stay 4x smaller. PyTorch's default initialization, as in CleanRL.
    """

    def __init__(self, num_actions: int, channels_last: bool = False):
        super().__init__()
        self.num_actions, self.channels_last = num_actions, channels_last
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
        if self.channels_last:  # reorder the uint8 frames, 4x cheaper than reordering floats
            obs = obs.contiguous(memory_format=torch.channels_last)
        x = obs.float().mul_(1.0 / 255.0)  # .float() keeps the memory format; in place saves a pass
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
    """`start` at t = 0, linearly to `end` at t = duration, then `end`: one signature in every script, for a
    learning rate over updates and an exploration epsilon over agent steps."""
    frac = min(t / duration, 1.0) if duration > 0 else 1.0
    return start * (1.0 - frac) + end * frac


class ReplayMemory:
    """Dopamine-style replay memory: each 84x84 frame stored once, the 4-frame stacks rebuilt on sampling.

    Each env has its own ring of `capacity // num_envs` slots; the envs step together, so one cursor
    serves all rings. Slot i of env e holds the newest frame of an observation s_i, then, once the step is
    taken, the action a_i, its (sign-clipped) reward r_i and terminated_i; s_{i+1}'s newest frame is in
    slot i+1. A stack is the frames of slots i-3..i, with zeros in place of any frame before the start of
    the game, as the env pads them at reset. So a transition is 5 frames, slots i-3..i+1: s = the first
    four, s' = the last four.
    """

    STACK = wrappers.FRAME_STACK  # frames per observation: a transition spans STACK + 1 slots
    FRAMES_PER_SAMPLE = STACK + 1

    def __init__(self, capacity: int, num_envs: int,
                 frame_shape: tuple[int, int] = (wrappers.SCREEN_SIZE, wrappers.SCREEN_SIZE)):
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
        return wrappers.SCREEN_SIZE**2 + 1 + 4 + 1 + 1 + 1

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
        low = self.STACK - 1 if self.frames_added > self.size else 0
        return low, held - 1

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A uniform minibatch: frames (B, STACK + 1, 84, 84) uint8 with s = [:, :-1] and s' = [:, 1:], actions,
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

        window = (slots[:, None] + np.arange(1 - self.STACK, 2)) % self.size  # slots i-3 .. i+1
        if self._batch_frames is None or len(self._batch_frames) != batch_size:
            self._batch_frames = np.empty((batch_size, self.FRAMES_PER_SAMPLE, *self.frame_shape), np.uint8)
        flat = self.frames.reshape(-1, *self.frame_shape)
        np.take(flat, envs[:, None] * self.size + window, axis=0, out=self._batch_frames, mode="clip")
        # Frame i-3+w (w = 0..2) belongs to an earlier game when a game starts at any later slot up to i.
        starts = self.game_start[envs[:, None], window[:, 1 : self.STACK]]
        earlier_game = np.flip(np.logical_or.accumulate(np.flip(starts, 1), axis=1), 1)
        self._batch_frames[:, : self.STACK - 1][earlier_game] = 0
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


def epsilon_greedy(q_network: QNetwork, obs: np.ndarray, epsilon: float, num_actions: int, device: torch.device,
                   lazy: bool = True) -> np.ndarray:
    """Actions for a batch of observations: uniform with probability epsilon, else argmax Q.

    The random draws come first and are the same whether or not Q is computed, so `lazy` (skip the
    network when every env explores) changes the speed only. Q is computed in float32 even with --bf16:
    on a batch of one observation bf16 is slower (0.85 ms fp32, 1.19 ms bf16 per forward pass on a 2-core
    AMX Xeon, benchmark/studies/openmp_wait_policy.md), and the argmax is then exact.
    """
    explore = np.random.random(len(obs)) < epsilon
    actions = np.random.randint(num_actions, size=len(obs))
    if explore.all() and lazy:
        return actions
    with torch.inference_mode():
        greedy = q_network(torch.from_numpy(obs).to(device)).argmax(dim=1).cpu().numpy()
    return np.where(explore, actions, greedy)


def evaluation_act(q_network: QNetwork, epsilon: float, proc: harness.Process):
    """Acting outside training (evaluation, --run): epsilon-greedy with --eval-epsilon."""
    return lambda obs: epsilon_greedy(q_network, obs, epsilon, q_network.num_actions, proc.device)


def check_args(args: Args) -> None:
    """DQN's settings that cannot run end in one line (the shared ones were checked by harness.parse)."""
    harness.check_range(args, positive=("learning_rate",),
                        non_negative=("rmsprop_eps", "exploration_steps", "learning_starts"),
                        unit_interval=("gamma", "start_e", "end_e", "eval_epsilon", "rmsprop_alpha"),
                        at_least_one=("buffer_size", "batch_size", "train_frequency", "target_network_frequency"))
    if args.buffer_size // args.num_envs < 2 * wrappers.FRAME_STACK:
        harness.fail(f"--buffer-size {args.buffer_size} is too small for {args.num_envs} envs: give each at least "
                     f"{2 * wrappers.FRAME_STACK} transitions")
    bytes_each = ReplayMemory.bytes_per_transition()
    if args.run is None:
        harness.check_memory(args.buffer_size * bytes_each, f"a replay memory of --buffer-size {args.buffer_size:,}",
                             lambda usable: f"the largest --buffer-size that fits is {usable // bytes_each:,}")
    if args.learning_starts < args.batch_size:
        harness.fail(f"--learning-starts {args.learning_starts} must be at least --batch-size {args.batch_size}")
    if args.save_replay and not args.save_model:
        harness.fail("--save-replay saves the replay memory with the checkpoints: drop --no-save-model")


def main() -> None:
    args, checkpoint = harness.parse(Args, algo="dqn", resumable=("lazy_greedy",))
    if checkpoint is not None:  # a checkpoint of an older dqn_atari.py may hold None for a preset's value
        args = fill_from_preset(args)
    check_args(args)
    proc = harness.setup_process(args)
    if proc.world_size > 1:
        harness.fail("dqn_atari.py trains in one process: run it without torchrun")
    device = proc.device
    if args.run is not None:
        harness.replay(args, proc, "dqn", lambda n: QNetwork(n, args.channels_last),
                       lambda q_network: evaluation_act(q_network, args.eval_epsilon, proc))
        return

    envs = wrappers.make_vector_env(args.env_id, args.num_envs, backend=args.env_backend,
                                    num_threads=proc.env_threads,
                                    repeat_action_probability=args.repeat_action_probability)
    num_actions = int(envs.single_action_space.n)
    q_network = QNetwork(num_actions, channels_last=args.channels_last).to(device)
    # With --bf16 the target network is held in bf16: autocast would round its weights to bf16 at every
    # update, and they change only at each copy, so the targets are bit-identical and each update is
    # ~0.4 ms (~4%) faster. Copies into it (load_state_dict) round the online weights.
    target_network = QNetwork(num_actions, channels_last=args.channels_last).to(
        device, dtype=torch.bfloat16 if proc.bf16 else None)
    if args.compile:  # docs/speed.md: slower for DQN on 2 cores, kept for machines where it pays
        q_network.compile()
        target_network.compile()
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=args.fused_adam or None)
    else:  # centered RMSProp without momentum, as DeepMind's code and Dopamine's dqn_nature.gin
        optimizer = torch.optim.RMSprop(q_network.parameters(), lr=args.learning_rate, alpha=args.rmsprop_alpha,
                                        eps=args.rmsprop_eps, centered=True)
    memory = ReplayMemory(args.buffer_size, args.num_envs)
    learning_begins = args.learning_starts  # the agent step after which updates start
    # The harness restores the online network and the optimizer; the target network and the replay memory
    # are DQN's, restored here (the memory, up to 7 GB, before the run's clock starts).
    harness.start_from(checkpoint, q_network, optimizer, args, proc)
    if checkpoint is None:
        target_network.load_state_dict(q_network.state_dict())
    else:
        target_network.load_state_dict(checkpoint["target_model"])
        saved = harness.load_replay(os.path.join(args.resume, "replay.npz"), checkpoint["global_step"])
        if saved is not None:
            try:
                memory.load_state(saved)
            except (ValueError, KeyError) as e:
                print(f"warning: not using the saved replay memory ({e})", file=sys.stderr)
                saved = None
        if saved is None:  # refill the memory first
            learning_begins = checkpoint["global_step"] + args.learning_starts
    exploration_steps = exploration_duration(args.exploration_steps, args.total_timesteps)
    # The logged settings show the agent steps of exploration used, where --exploration-steps is None.
    run = harness.Run(args, proc, "dqn", q_network, optimizer, checkpoint, args.total_timesteps, num_actions,
                      phases=("env", "inference", "replay", "update"),
                      settings=dict(exploration_steps=exploration_steps, replay_slots_per_env=memory.size))
    global_step = run.start_step
    act = evaluation_act(q_network, args.eval_epsilon, proc)

    # Emulators cannot be snapshotted: a resumed run starts new games, seeded from the seed and the step.
    obs, _ = envs.reset(seed=proc.seed + global_step)
    # Every env starts a game; any unfinished step stored before a resume is marked unplayed by this.
    memory.add_observation(obs[:, -1], game_start=np.ones(args.num_envs, dtype=bool))
    resetting = np.zeros(args.num_envs, dtype=bool)  # this step is a reset step (NEXT_STEP autoreset)
    next_log, num_updates, loss, q_taken = global_step, 0, None, None
    while global_step < args.total_timesteps:
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, global_step)
        with run.timer("inference"):
            torch.set_num_threads(proc.inference_threads)
            actions = epsilon_greedy(q_network, obs, epsilon, num_actions, device, lazy=args.lazy_greedy)
            torch.set_num_threads(proc.torch_threads)
        with run.timer("env"):
            obs, rewards, terminated, truncated, info = envs.step(actions)
        memory.add(actions, rewards, terminated, obs[:, -1], reset_step=resetting)
        resetting = wrappers.reset_next(terminated, truncated, info)
        previous_step, global_step = global_step, global_step + args.num_envs
        run.log_episodes(info, global_step)

        if global_step > learning_begins:
            # One update per train_frequency agent steps, so several envs keep CleanRL's replay ratio.
            for _ in range(global_step // args.train_frequency - previous_step // args.train_frequency):
                with run.timer("replay"):
                    b_frames, b_actions, b_rewards, b_terminated = (
                        torch.from_numpy(x).to(device, non_blocking=True) for x in memory.sample(args.batch_size))
                with run.timer("update"):
                    b_obs, b_next_obs = b_frames[:, :-1], b_frames[:, 1:]
                    with torch.no_grad(), proc.autocast:
                        next_q_target = target_network(b_next_obs)
                        next_q_online = q_network(b_next_obs) if args.double_dqn else None
                    targets = td_target(b_rewards, next_q_target, b_terminated, args.gamma, next_q_online)
                    with proc.autocast:
                        q_taken = q_network(b_obs).gather(1, b_actions.long().unsqueeze(1)).squeeze(1)
                    loss = td_loss(q_taken, targets, args.loss)
                    run.check_finite(global_step, loss)  # before the step: NaN never reaches the weights
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                num_updates += 1
            if global_step // args.target_network_frequency != previous_step // args.target_network_frequency:
                target_network.load_state_dict(q_network.state_dict())

        if global_step >= next_log or global_step >= args.total_timesteps:
            next_log = global_step + 1_000
            run.log(global_step, {"charts/epsilon": epsilon, "charts/learning_rate": args.learning_rate})
            if loss is not None:
                run.log(global_step, {"losses/td_loss": loss, "losses/q_values": q_taken.mean()})
            run.log_speed(global_step, eps=f"{epsilon:.3f}")
        run.evaluate_if_due(global_step, act)
        if run.checkpoint_due(global_step, final=global_step >= args.total_timesteps):
            if args.save_replay:  # first the memory, then the checkpoint that names its step
                harness.save_replay(memory.state(), global_step, os.path.join(run.run_dir, "replay.npz"))
            run.save_checkpoint(global_step, target_model=target_network.state_dict())
        if run.should_stop(global_step):
            break

    envs.close()
    run.finish(global_step, act, note=f"{num_updates} updates")


if __name__ == "__main__":
    main()
