"""PPO on Atari: clipped-surrogate actor-critic, one file that trains, resumes, replays and scales out.

Algorithm: Proximal Policy Optimization (Schulman et al. 2017, arXiv 1707.06347), with the Atari
details collected by Huang et al. 2022 ("The 37 Implementation Details of Proximal Policy Optimization",
ICLR blog track): 8 envs x 128 steps, GAE (Schulman et al. 2015, arXiv 1506.02438), 4 epochs of 4
minibatches, orthogonal init, a learning rate annealed to 0, advantages normalized per minibatch, a
clipped value loss, a global gradient-norm clip, Adam with eps 1e-5. The network is the Nature CNN of
Mnih et al. 2015 with a policy head and a value head. The defaults are CleanRL's `ppo_atari.py`, whose
flag names we keep, so its Breakout numbers (mean of the last 100 training games at 10M agent steps) are
the ones to compare with.

Deliberate differences from CleanRL's file:
  - Episode boundaries follow gymnasium 1.x NEXT_STEP autoreset (see `wrappers.py`): the transition whose
    observation is the last one of a finished game is a *reset step*; it gets zero weight in the loss and
    in the advantage statistics. A lost life or a game over stops bootstrapping; a truncation (the
    108,000-frame cap) bootstraps from the value of the game's last observation. CleanRL treats the cap
    as a death.
  - Speed on CPU: observations stay uint8 until the network divides them by 255, rollout buffers are
    preallocated tensors, the convolutions run in channels-last memory (`--channels-last`), Adam is torch's
    fused kernel (`--fused-adam`), subnormal floats count as zero (`--flush-denormal`), and bf16 autocast
    (`--bf16`) is on by default only where the hardware computes bf16 natively. Each is a flag that turns it
    off; benchmark/ppo_speed.py and benchmark/denormal_speed.py measure them.
  - `--save-model` writes checkpoints atomically; `--resume RUN_DIR` continues a run; `--run MODEL`
    replays a saved model with a video; `torchrun` runs the same file data-parallel.

Usage:
    python ppo_atari.py                                   # Breakout, 10M agent steps
    python ppo_atari.py --env-id PongNoFrameskip-v4 --save-model
    python ppo_atari.py --resume runs/<run_name>          # continue from runs/<run_name>/checkpoint.pt
    python ppo_atari.py --run runs/<run_name>/ppo_atari.model --run-episodes 10
    torchrun --standalone --nproc_per_node 2 ppo_atari.py # data-parallel, 2 processes
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine, spinning torch threads steal the
# cores that the emulator threads and any other process need (measured: a 2-thread update ran 2x slower
# beside another busy process). Must be set before torch loads its OpenMP runtime; a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402 (after the OpenMP setting above)
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.distributions.categorical import Categorical

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


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name and of the model file name)"""
    seed: int = 1
    """seed of Python, NumPy, torch and the envs (env i gets seed + i; rank r's envs follow rank r-1's)"""
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
    """agent steps of the whole job, summed over all envs and all processes (1 agent step = 4 frames)"""
    num_envs: int = 8
    """parallel game environments per process (under torchrun the job has num_envs x processes)"""
    env_backend: str = "native"
    """`native` (ale-py's C++ vector env), `sync` or `async` (gymnasium vector envs); see wrappers.py"""
    env_threads: int = 0
    """emulator threads of the native backend (0: one per env, at most the cores of this process)"""
    torch_threads: int | None = None
    """torch intra-op threads (None: the cores available to this process, shared among local ranks)"""
    flush_denormal: bool = True
    """treat subnormal floats (below 1.2e-38) as zero on CPU (torch.set_flush_denormal): after many updates
    much of Adam's moment estimates decays into that range, where x86 arithmetic is many times slower (49%
    of them in a DQN run at 365k steps: an Adam step 13.2 ms instead of 2.1; benchmark/denormal_speed.py)"""
    inference_threads: int | None = None
    """torch threads for the rollout's forward passes of num_envs observations (None: --torch-threads); the
    update's minibatches use --torch-threads. One thread can win on a small batch on a busy machine"""

    learning_rate: float = 2.5e-4
    """Adam learning rate at the start (Huang et al. 2022)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over the updates"""
    num_steps: int = 128
    """agent steps per env per rollout (Schulman et al. 2017)"""
    gamma: float = 0.99
    """discount factor per agent step"""
    gae_lambda: float = 0.95
    """lambda of generalized advantage estimation (Schulman et al. 2015)"""
    num_minibatches: int = 4
    """minibatches per epoch; the rollout of a process must split into them evenly"""
    update_epochs: int = 4
    """passes over each rollout (K epochs in Schulman et al. 2017)"""
    norm_adv: bool = True
    """normalize advantages per minibatch (mean 0, std 1 over its valid transitions)"""
    clip_coef: float = 0.1
    """surrogate clipping epsilon (Schulman et al. 2017, Atari value)"""
    clip_vloss: bool = True
    """clip the value loss around the rollout's values, as the OpenAI baselines do (Huang et al. 2022)"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    adam_eps: float = 1e-5
    """Adam epsilon (Huang et al. 2022; torch's default is 1e-8)"""
    target_kl: float | None = None
    """stop an update's epochs early once the approximate KL exceeds this (None: never)"""

    channels_last: bool = True
    """NHWC memory format for the convolutions: oneDNN's fast path on CPU (a training step 1.6x faster here)"""
    bf16: bool = field(default_factory=native_bf16)
    """bf16 autocast for the network (default on only where the hardware computes bf16 natively)"""
    fused_adam: bool = True
    """torch's fused Adam kernel: the same update in one pass over the parameters instead of a dozen small
    ops; results may differ from the loop's in the last bits. Measured here: no difference on an idle machine
    (112 vs 111 ms per minibatch step), 4-5 ms instead of 15-27 ms per Adam step on a busy one"""

    save_model: bool = False
    """save the model at the end and a checkpoint every --checkpoint-every agent steps"""
    checkpoint_every: int = 500_000
    """agent steps between checkpoints (with --save-model); runs/<run_name>/checkpoint.pt is overwritten"""
    resume: str | None = None
    """a run directory to continue from its checkpoint.pt; settings come from the checkpoint, except
    --total-timesteps (to extend the run) and the speed flags (SPEED_FLAGS) when given"""
    run: str | None = None
    """a model file to replay instead of training: play --run-episodes games, print their scores"""
    run_episodes: int = 10
    """with --run: whole games to play"""
    video: bool = True
    """with --run: write the games to videos/<model name>.mp4 (colour screen | the agent's 84x84 input)"""
    progress: bool = True
    """show a progress bar on stderr (steps, steps/s, time left, recent score)"""


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain `std`, constant bias (Saxe et al. 2014; Huang et al. 2022)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """The Nature CNN (Mnih et al. 2015) with a policy head and a value head on its 512 features.

    Takes uint8 frames (N, 4, 84, 84) and scales them to [0, 1] itself, so buffers stay 4x smaller.
    The policy head starts near uniform (gain 0.01), the value head at gain 1 (Huang et al. 2022).
    """

    def __init__(self, num_actions: int, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Action logits (N, A) and state values (N,), both float32 even under autocast."""
        if self.channels_last:  # reorder the uint8 frames, 4x cheaper than reordering floats
            obs = obs.contiguous(memory_format=torch.channels_last)
        x = obs.float().mul_(1.0 / 255.0)  # .float() keeps the memory format; in place saves a pass
        hidden = self.network(x)
        return self.actor(hidden).float(), self.critic(hidden).float().squeeze(-1)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    episode_ends: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns (Schulman et al. 2015) under NEXT_STEP autoreset.

    All inputs are (T, N) over T steps of N envs, except next_value (N,), the value of the observation
    that follows the last step. At step t the agent saw obs_t, got rewards[t] and then obs_{t+1}:
      terminated[t]   a life was lost or the game is over: obs_{t+1} has no future, do not bootstrap;
      episode_ends[t] the game ended at t (game over or truncation): step t+1 is a reset step, so the
                      advantage must not flow back from t+1 to t. After a truncation obs_{t+1} is still
                      the last observation of the game, and delta_t bootstraps from its value;
      valid[t]        obs_t is not the last observation of a finished game, i.e. step t is no reset
                      step. Invalid steps get advantage 0 (and the loss masks them out).
    delta_t = r_t + gamma * V(obs_{t+1}) * (1 - terminated_t) - V(obs_t)
    A_t     = delta_t + gamma * lam * (1 - terminated_t) * (1 - episode_ends_t) * A_{t+1}
    Returns (advantages, returns = advantages + values), both (T, N) float32.
    """
    num_steps = rewards.shape[0]
    valid = valid.float()
    not_terminated = 1.0 - terminated.float()
    carry = not_terminated * (1.0 - episode_ends.float())
    next_values = torch.cat([values[1:], next_value.unsqueeze(0)], dim=0)
    deltas = rewards + gamma * next_values * not_terminated - values
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        last = (deltas[t] + gamma * lam * carry[t] * last) * valid[t]
        advantages[t] = last
    return advantages, advantages + values


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the entries where mask is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantages scaled to mean 0, std 1 over the valid entries (Huang et al. 2022, detail 7)."""
    mean = masked_mean(advantages, mask)
    count = mask.sum()
    var = ((advantages - mean) ** 2 * mask).sum() / (count - 1.0).clamp(min=1.0)  # unbiased, like torch.std
    return (advantages - mean) / (var.sqrt() + eps) * mask


def ppo_loss(
    new_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_vloss: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO objective to minimize on one minibatch, and its statistics (detached).

    policy_loss = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))      (Schulman et al. 2017, eq. 7)
    value_loss  = 0.5 * mean((V - R)^2), or with clip_vloss the max of that and of the value clipped to
                  within clip_coef of the rollout's value (OpenAI baselines; Huang et al. 2022, detail 9)
    loss        = policy_loss - ent_coef * mean(entropy) + vf_coef * value_loss
    Every mean runs over the entries where mask is 1, so reset steps weigh nothing.
    Statistics: policy_loss, value_loss, entropy, old_approx_kl (mean -log ratio), approx_kl
    (mean (ratio - 1) - log ratio, Schulman 2020 "Approximating KL divergence") and clipfrac.
    """
    mask = mask.float()
    log_ratio = new_log_probs - old_log_probs
    ratio = log_ratio.exp()
    policy_loss = masked_mean(
        torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)), mask
    )
    value_loss_unclipped = (new_values - returns) ** 2
    if clip_vloss:
        clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
        value_loss_clipped = (clipped_values - returns) ** 2
        value_loss = 0.5 * masked_mean(torch.max(value_loss_unclipped, value_loss_clipped), mask)
    else:
        value_loss = 0.5 * masked_mean(value_loss_unclipped, mask)
    entropy_mean = masked_mean(entropy, mask)
    loss = policy_loss - ent_coef * entropy_mean + vf_coef * value_loss
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy_mean.detach(),
            "old_approx_kl": masked_mean(-log_ratio, mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "clipfrac": masked_mean(((ratio - 1.0).abs() > clip_coef).float(), mask),
        }
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the valid entries (1: perfect, <= 0: useless)."""
    mask = mask.float()
    returns_var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    error = returns - values
    error_var = masked_mean((error - masked_mean(error, mask)) ** 2, mask)
    return float("nan") if returns_var == 0 else float(1.0 - error_var / returns_var)


def linear_schedule(iteration: int, num_iterations: int, start: float) -> float:
    """The learning rate of update `iteration` (1-based): `start` at the first, annealed linearly toward 0."""
    return start * (1.0 - (iteration - 1.0) / num_iterations)


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


# Settings of how a run computes (where, on how many threads, in which memory format or precision), not of
# what: --resume takes them from the command line when given there (a run may continue on another machine),
# and every other setting from the checkpoint.
SPEED_FLAGS = ("cuda", "env_backend", "env_threads", "torch_threads", "inference_threads", "channels_last", "bf16",
               "fused_adam", "flush_denormal")


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to path + ".tmp", then rename: a crash never leaves a half-written file behind."""
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_file(path: str, what: str, device: torch.device) -> dict:
    """torch.load a model or checkpoint file written by this script, or fail with one line."""
    if not os.path.isfile(path):
        fail(f"{what} '{path}' does not exist")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file raises any of pickle's, zip's or torch's errors
        fail(f"cannot read {what} '{path}': not a file saved by ppo_atari.py ({type(e).__name__})")
    if not isinstance(data, dict) or data.get("format") != 1 or "model" not in data:
        fail(f"{what} '{path}' is not a model file of this project (no format-1 'model' entry)")
    if data.get("algo") != "ppo":
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


def model_file(args: Args, agent: Agent, num_actions: int) -> dict:
    """The contract's model file: enough to replay the agent and to know what it was trained on."""
    return {
        "format": 1,
        "algo": "ppo",
        "env_id": args.env_id,
        "num_actions": int(num_actions),
        "model": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
        "args": dataclasses.asdict(args),
    }


def settings_table(settings: dict) -> str:
    return "|setting|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in settings.items())


def replay(args: Args, device: torch.device) -> None:
    """--run: play whole games with a saved model, print each raw score and mean +- std, write a video.

    Actions are sampled from the policy, as in training: the greedy action can loop forever in a state
    the policy never learned to leave (in Breakout, waiting to serve). Preprocessing is the training one
    (wrappers.make_env), without life loss or reward clipping, so a game is a whole game and the score is
    the game's.
    """
    import cv2

    if args.run_episodes < 1:
        fail(f"--run-episodes must be at least 1, got {args.run_episodes}")
    saved = load_file(args.run, "model file", device)
    env_id = saved["env_id"]
    if given_on_command_line("env-id") and wrappers.resolve_game(args.env_id) != wrappers.resolve_game(env_id):
        fail(f"model '{args.run}' was trained on {env_id}, not {args.env_id}; drop --env-id or pick its model")
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no emulator banner before a one-line error
    env = wrappers.make_env(env_id, args.seed, episodic_life=False, clip_reward=False, render_mode="rgb_array")
    if env.action_space.n != saved["num_actions"]:
        fail(f"model '{args.run}' has {saved['num_actions']} actions but {env_id} has {env.action_space.n}")
    agent = Agent(saved["num_actions"], channels_last=args.channels_last).to(device)
    try:
        agent.load_state_dict(saved["model"])
    except RuntimeError:
        fail(f"model '{args.run}' does not fit the Nature CNN of ppo_atari.py (different layer shapes)")
    agent.eval()

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
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                logits, _ = agent(torch.from_numpy(np.asarray(obs)).to(device).unsqueeze(0))
            action = Categorical(logits=logits).sample().item()
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


def main() -> None:
    args = tyro.cli(Args)

    if args.run is not None and args.resume is not None:
        fail("--run replays a model file and --resume continues a training run: give one of them")
    start_iteration, global_step, checkpoint = 1, 0, None
    if args.resume is not None:
        checkpoint = load_file(os.path.join(args.resume, "checkpoint.pt"), "checkpoint", torch.device("cpu"))
        saved = dict(checkpoint["args"], resume=args.resume, progress=args.progress)
        for name in ("total_timesteps",) + SPEED_FLAGS:
            if given_on_command_line(name.replace("_", "-")):
                saved[name] = getattr(args, name)
        args = Args(**saved)
        global_step, start_iteration = checkpoint["global_step"], checkpoint["iteration"] + 1

    # torchrun sets these; a plain `python ppo_atari.py` is rank 0 of a world of 1.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    use_cuda = args.cuda and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch_threads = args.torch_threads or max(1, cores // local_world_size)
    torch.set_num_threads(torch_threads)  # the update is CPU-bound on a CPU: use exactly our cores, no more
    torch.set_flush_denormal(args.flush_denormal)  # subnormal floats: see Args.flush_denormal
    torch.backends.cudnn.deterministic = args.torch_deterministic

    if args.run is not None:
        try:
            replay(args, device)
        except wrappers.EnvIdError as e:
            fail(str(e))
        return

    if args.num_envs < 1:
        fail(f"--num-envs must be at least 1, got {args.num_envs}")
    if args.num_steps < 1 or args.num_minibatches < 1 or (args.num_envs * args.num_steps) % args.num_minibatches:
        fail(
            f"a rollout of {args.num_envs} envs x {args.num_steps} steps does not split into "
            f"{args.num_minibatches} equal minibatches: change --num-minibatches, --num-envs or --num-steps"
        )
    if args.update_epochs < 1:
        fail(f"--update-epochs must be at least 1, got {args.update_epochs}")
    if args.checkpoint_every < 1:
        fail(f"--checkpoint-every must be at least 1 agent step, got {args.checkpoint_every}")
    inference_threads = args.inference_threads or torch_threads
    # Derived sizes (per process unless said otherwise).
    batch_size = args.num_envs * args.num_steps  # transitions per rollout of one process
    minibatch_size = batch_size // args.num_minibatches
    steps_per_iteration = batch_size * world_size  # agent steps of the whole job per update
    num_iterations = args.total_timesteps // steps_per_iteration
    if num_iterations < 1:
        fail(f"--total-timesteps {args.total_timesteps} is less than one rollout of the job ({steps_per_iteration})")
    try:
        wrappers.resolve_game(args.env_id)
    except wrappers.EnvIdError as e:
        fail(str(e))
    stop = StopRequest()

    if world_size > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(device)
    # Each rank plays other games: its seed is offset by the envs before it, so env i of rank r gets
    # seed + r * num_envs + i, and every env of the job has its own seed.
    rank_seed = args.seed + rank * args.num_envs
    random.seed(rank_seed)
    np.random.seed(rank_seed)
    torch.manual_seed(rank_seed)

    run_name = args.run_name or f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = args.resume or os.path.join(args.runs_dir, run_name)

    envs = wrappers.make_vector_env(
        args.env_id,
        args.num_envs,
        backend=args.env_backend,
        num_threads=args.env_threads or max(1, min(args.num_envs, cores // local_world_size)),
    )
    num_actions = int(envs.single_action_space.n)  # a numpy int64 would not load with weights_only=True
    agent = Agent(num_actions, channels_last=args.channels_last).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps,
                                 fused=args.fused_adam or None)
    if checkpoint is not None:
        agent.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        optimizer.param_groups[0]["fused"] = args.fused_adam or None  # loading restores the saved choice
        if len(checkpoint["rng"]) == world_size:  # same job shape: every rank picks up its own streams
            set_rng_states(checkpoint["rng"][rank])
    if world_size > 1:  # every rank starts from rank 0's parameters
        for p in agent.parameters():
            dist.broadcast(p.data, src=0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(run_dir, exist_ok=True)
        # On resume, purge_step drops the events the interrupted run wrote after its checkpoint: TensorBoard
        # hides every earlier event at a step >= purge_step, and the checkpoint's own step was logged before it.
        writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint is not None else None)
        settings = dict(dataclasses.asdict(args), run_dir=run_dir, world_size=world_size, device=str(device),
                        torch_threads=torch_threads, inference_threads=inference_threads, batch_size=batch_size,
                        minibatch_size=minibatch_size, num_iterations=num_iterations, start_step=global_step)
        writer.add_text("settings", settings_table(settings), global_step)

    # Rollout buffers, preallocated on the device; slot t holds step t of every env.
    # Done-flag convention (NEXT_STEP autoreset): terminated[t] = life lost or game over after action t,
    # do not bootstrap; episode_ends[t] = game over or truncation at t, so step t+1 is a reset step;
    # valid[t] = 0 for a reset step (obs[t] is the last frame of a finished game, its action is ignored),
    # which the loss and the advantage statistics weigh 0. A truncation is not a termination: it
    # bootstraps from V(obs[t+1]), the game's last observation.
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape, dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    log_probs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminated = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    episode_ends = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    valid = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)

    # Emulators cannot be snapshotted: a resumed run starts new games, seeded from the seed and the step.
    next_obs_np, _ = envs.reset(seed=rank_seed + global_step)
    next_obs = torch.from_numpy(next_obs_np).to(device)
    next_valid = torch.ones(args.num_envs, dtype=torch.bool, device=device)

    recent_returns: list[float] = []  # raw scores of this process's last 100 games
    time_env = time_inference = time_update = 0.0
    start_time, start_step = time.perf_counter(), global_step
    next_checkpoint = (global_step // args.checkpoint_every + 1) * args.checkpoint_every
    total_steps = num_iterations * steps_per_iteration
    interrupted = False  # stopped early by StopRequest
    progress = None
    if rank == 0 and args.progress:
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=global_step, unit="step", unit_scale=True, dynamic_ncols=True,
                        mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def save_checkpoint(iteration: int) -> None:
        states = [None] * world_size
        if world_size > 1:
            dist.all_gather_object(states, rng_states())
        else:
            states = [rng_states()]
        if rank == 0:
            save_atomic(dict(model_file(args, agent, num_actions), optimizer=optimizer.state_dict(),
                             global_step=global_step, iteration=iteration, rng=states, run_name=run_name),
                        os.path.join(run_dir, "checkpoint.pt"))

    for iteration in range(start_iteration, num_iterations + 1):
        lr = linear_schedule(iteration, num_iterations, args.learning_rate) if args.anneal_lr else args.learning_rate
        optimizer.param_groups[0]["lr"] = lr

        agent.eval()
        torch.set_num_threads(inference_threads)
        for step in range(args.num_steps):
            t0 = time.perf_counter()
            obs[step] = next_obs
            valid[step] = next_valid
            with torch.inference_mode(), autocast:
                logits, value = agent(next_obs)
                policy = Categorical(logits=logits)
                action = policy.sample()
                log_probs[step] = policy.log_prob(action)
            values[step] = value
            actions[step] = action
            action_np = action.cpu().numpy()
            t1 = time.perf_counter()
            next_obs_np, reward, term, trunc, info = envs.step(action_np)
            t2 = time.perf_counter()
            ends = wrappers.reset_next(term, trunc, info)
            rewards[step] = torch.from_numpy(reward).to(device)
            terminated[step] = torch.from_numpy(term).to(device)
            episode_ends[step] = torch.from_numpy(ends).to(device)
            next_valid = torch.from_numpy(~ends).to(device)
            next_obs = torch.from_numpy(next_obs_np).to(device)
            global_step += args.num_envs * world_size
            if "_episode" in info and info["_episode"].any():
                for i in np.flatnonzero(info["_episode"]):
                    score, length = float(info["episode"]["r"][i]), int(info["episode"]["l"][i])
                    recent_returns = (recent_returns + [score])[-100:]
                    if writer is not None:
                        writer.add_scalar("charts/episodic_return", score, global_step)
                        writer.add_scalar("charts/episodic_length", length, global_step)
            time_inference += t1 - t0
            time_env += t2 - t1

        t0 = time.perf_counter()
        with torch.inference_mode(), autocast:
            _, next_value = agent(next_obs)
        # A final step whose game just ended has next_valid 0: episode_ends already stops the chain there.
        advantages, returns = compute_gae(rewards, values, next_value, terminated, episode_ends, valid,
                                          args.gamma, args.gae_lambda)
        time_inference += time.perf_counter() - t0

        t0 = time.perf_counter()
        torch.set_num_threads(torch_threads)
        agent.train()
        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_actions, b_log_probs, b_values = actions.reshape(-1), log_probs.reshape(-1), values.reshape(-1)
        b_advantages, b_returns, b_valid = advantages.reshape(-1), returns.reshape(-1), valid.reshape(-1).float()
        for epoch in range(args.update_epochs):
            order = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, minibatch_size):
                mb = order[start : start + minibatch_size]
                with autocast:
                    logits, new_values = agent(b_obs[mb])
                new_dist = Categorical(logits=logits)
                mb_advantages = b_advantages[mb]
                if args.norm_adv:
                    mb_advantages = normalize_advantages(mb_advantages, b_valid[mb])
                loss, stats = ppo_loss(new_dist.log_prob(b_actions[mb]), b_log_probs[mb], mb_advantages,
                                       new_values, b_values[mb], b_returns[mb], new_dist.entropy(), b_valid[mb],
                                       args.clip_coef, args.vf_coef, args.ent_coef, args.clip_vloss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if world_size > 1:  # data parallel: every rank applies the mean gradient of all ranks
                    grads = [p.grad for p in agent.parameters()]
                    flat = torch.cat([g.reshape(-1) for g in grads])
                    dist.all_reduce(flat)
                    flat /= world_size
                    offset = 0
                    for g in grads:
                        g.copy_(flat[offset : offset + g.numel()].view_as(g))
                        offset += g.numel()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None:
                kl = stats["approx_kl"].clone()
                if world_size > 1:  # all ranks must stop together
                    dist.all_reduce(kl)
                    kl /= world_size
                if kl > args.target_kl:
                    break
        time_update += time.perf_counter() - t0

        if writer is not None:
            sps = int((global_step - start_step) / (time.perf_counter() - start_time))
            writer.add_scalar("charts/learning_rate", lr, global_step)
            for name, value in stats.items():
                writer.add_scalar(f"losses/{name}", value.item(), global_step)
            writer.add_scalar("losses/explained_variance", explained_variance(b_values, b_returns, b_valid), global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("time/env", time_env, global_step)
            writer.add_scalar("time/inference", time_inference, global_step)
            writer.add_scalar("time/update", time_update, global_step)
        if progress is not None:
            progress.update(global_step - progress.n)
            score = f"{np.mean(recent_returns):.1f}" if recent_returns else "-"
            progress.set_postfix_str(f"score(100)={score} env={time_env:.0f}s inf={time_inference:.0f}s upd={time_update:.0f}s")
        stopping = stop.signal is not None
        if world_size > 1:  # a signal may reach the ranks at different iterations: all stop at the first
            flag = torch.tensor([float(stopping)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stopping = bool(flag.item())
            stop.signal = stop.signal or (signal.SIGTERM if stopping else None)
        if args.save_model and (global_step >= next_checkpoint or iteration == num_iterations or stopping):
            save_checkpoint(iteration)
            next_checkpoint = (global_step // args.checkpoint_every + 1) * args.checkpoint_every
        if stopping and iteration < num_iterations:
            interrupted = True
            break

    stop.loop_done = True
    if progress is not None:
        progress.close()
    if interrupted:  # an interrupted run keeps its checkpoint, not a final model
        if writer is not None:
            writer.close()
        envs.close()
        if world_size > 1:
            dist.destroy_process_group()
        stop.report(global_step, run_dir if args.save_model else None, quiet=rank != 0)  # rank 0 speaks for the job
    if args.save_model and rank == 0:
        path = os.path.join(run_dir, f"{args.exp_name}.model")
        save_atomic(model_file(args, agent, num_actions), path)
        print(f"model saved to {path}", file=sys.stderr)
    if writer is not None:
        writer.close()
    envs.close()
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
