"""PPO on Atari: clipped-surrogate actor-critic, in one file that reads as the algorithm.

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
    preallocated tensors, and the speed flags of `harness.RunArgs` (channels-last, fused Adam, flushed
    denormals, bf16 where the hardware has it) are on by default.
  - The run around the algorithm is `harness.py`: checkpoints and `--resume`, Ctrl-C, evaluation every
    `--eval-every` agent steps, `--run MODEL` (or `--run random`) with a video, and `torchrun`
    data-parallel training. A copy of this file with another loss keeps all of them.

Usage:
    python ppo_atari.py                                   # Breakout, 10M agent steps
    python ppo_atari.py --env-id PongNoFrameskip-v4
    python ppo_atari.py --resume runs/<run_name>          # continue from runs/<run_name>/checkpoint.pt
    python ppo_atari.py --run runs/<run_name>/ppo_atari.model --run-episodes 10
    torchrun --standalone --nproc_per_node 2 ppo_atari.py # data-parallel, 2 processes
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.distributions.categorical import Categorical

import harness
import wrappers


@dataclass
class Args(harness.RunArgs):
    """PPO's settings; the run's (game, steps, envs, files, evaluation, speed) are in harness.RunArgs."""

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

    num_envs: int = 8
    """parallel game environments per process (Huang et al. 2022; under torchrun the job has num_envs x processes)"""


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


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantages scaled to mean 0, std 1 over the valid entries (Huang et al. 2022, detail 7)."""
    mean = harness.masked_mean(advantages, mask)
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
    policy_loss = harness.masked_mean(
        torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)), mask
    )
    value_loss_unclipped = (new_values - returns) ** 2
    if clip_vloss:
        clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
        value_loss_clipped = (clipped_values - returns) ** 2
        value_loss = 0.5 * harness.masked_mean(torch.max(value_loss_unclipped, value_loss_clipped), mask)
    else:
        value_loss = 0.5 * harness.masked_mean(value_loss_unclipped, mask)
    entropy_mean = harness.masked_mean(entropy, mask)
    loss = policy_loss - ent_coef * entropy_mean + vf_coef * value_loss
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy_mean.detach(),
            "old_approx_kl": harness.masked_mean(-log_ratio, mask),
            "approx_kl": harness.masked_mean((ratio - 1) - log_ratio, mask),
            "clipfrac": harness.masked_mean(((ratio - 1.0).abs() > clip_coef).float(), mask),
        }
    return loss, stats


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """`start` at t = 0, linearly to `end` at t = duration, then `end`: one signature in every script, for a
    learning rate over updates and an exploration epsilon over agent steps."""
    frac = min(t / duration, 1.0) if duration > 0 else 1.0
    return start * (1.0 - frac) + end * frac


def check_args(args: Args) -> None:
    """PPO's settings that cannot run end in one line (the shared ones were checked by harness.parse)."""
    harness.check_range(args, positive=("learning_rate", "target_kl"), unit_interval=("gamma", "gae_lambda"),
                        non_negative=("clip_coef", "ent_coef", "vf_coef", "max_grad_norm", "adam_eps"),
                        at_least_one=("num_steps", "num_minibatches", "update_epochs"))
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        harness.fail(f"a rollout of {args.num_envs} envs x {args.num_steps} steps does not split into "
                     f"{args.num_minibatches} equal minibatches: change --num-minibatches, --num-envs or --num-steps")


def main() -> None:
    args, checkpoint = harness.parse(Args, algo="ppo")
    check_args(args)
    proc = harness.setup_process(args)
    device = proc.device
    if args.run is not None:
        harness.replay(args, proc, "ppo", lambda n: Agent(n, args.channels_last),
                       lambda agent: harness.sampling_act(agent, proc))
        return

    batch_size = args.num_envs * args.num_steps  # transitions per rollout of one process
    minibatch_size = batch_size // args.num_minibatches
    steps_per_iteration = batch_size * proc.world_size  # agent steps of the whole job per update
    num_iterations = args.total_timesteps // steps_per_iteration
    if num_iterations < 1:
        harness.fail(f"--total-timesteps {args.total_timesteps} is less than one rollout of the job ({steps_per_iteration})")

    harness.check_rollout_memory(args.num_envs, args.num_steps, device)
    envs = wrappers.make_vector_env(args.env_id, args.num_envs, backend=args.env_backend, num_threads=proc.env_threads,
                                    repeat_action_probability=args.repeat_action_probability)
    num_actions = int(envs.single_action_space.n)
    agent = Agent(num_actions, channels_last=args.channels_last).to(device)
    if args.compile:  # docs/speed.md: a start-up compile, other numerics
        agent.compile()
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps,
                                 fused=args.fused_adam or None)
    harness.start_from(checkpoint, agent, optimizer, args, proc)
    run = harness.Run(args, proc, "ppo", agent, optimizer, checkpoint, num_iterations * steps_per_iteration,
                      num_actions, settings=dict(batch_size=batch_size, minibatch_size=minibatch_size,
                                                 num_iterations=num_iterations))
    global_step = run.start_step
    if global_step % steps_per_iteration:
        harness.fail(f"the checkpoint's agent step {global_step} is not a whole number of this job's rollouts of "
                     f"{steps_per_iteration}: resume with the --num-envs and processes it was trained with")
    start_iteration = global_step // steps_per_iteration + 1  # the updates done, whatever the job's shape was
    act = harness.sampling_act(agent, proc)

    # Rollout buffers, preallocated; slot t holds step t of every env. The network's inputs and outputs live
    # on the device, the frames in the network's memory format (harness.frame_buffer); the per-step flags
    # from the envs are gathered in NumPy and moved once per rollout.
    # Done-flag convention (NEXT_STEP autoreset): terminated[t] = life lost or game over after action t,
    # do not bootstrap; episode_ends[t] = game over or truncation at t, so step t+1 is a reset step;
    # valid[t] = 0 for a reset step (obs[t] is the last frame of a finished game, its action is ignored),
    # which the loss and the advantage statistics weigh 0. A truncation is not a termination: it
    # bootstraps from V(obs[t+1]), the game's last observation.
    obs_shape = envs.single_observation_space.shape
    obs = harness.frame_buffer((args.num_steps, args.num_envs) + obs_shape, args.channels_last, device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    log_probs = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards_np = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminated_np, episode_ends_np, valid_np = (np.zeros((args.num_steps, args.num_envs), dtype=bool) for _ in range(3))

    # Emulators cannot be snapshotted: a resumed run starts new games, seeded from the seed and the step.
    next_obs = torch.from_numpy(envs.reset(seed=proc.seed + global_step)[0]).to(device)
    next_valid = np.ones(args.num_envs, dtype=bool)  # next_obs is not the last frame of a finished game

    for iteration in range(start_iteration, num_iterations + 1):
        lr = args.learning_rate
        if args.anneal_lr:  # to 0 over the run, one step per update (Huang et al. 2022)
            lr = linear_schedule(args.learning_rate, 0.0, num_iterations, iteration - 1)
        optimizer.param_groups[0]["lr"] = lr

        # Act, step, store: num_steps steps of every env with the current policy. The rollout is one autocast
        # region, so autocast casts the weights to bf16 once per rollout instead of at every step.
        torch.set_num_threads(proc.inference_threads)
        with torch.inference_mode(), proc.autocast:
            for step in range(args.num_steps):
                with run.timer("inference"):
                    obs[step] = next_obs
                    logits, values[step] = agent(obs[step])
                    # a divergence shows here first, after the update that blew the weights up
                    run.check_finite(global_step + step * args.num_envs * proc.world_size, logits, "the policy's logits")
                    policy = Categorical(logits=logits, validate_args=False)
                    actions[step] = policy.sample()
                    log_probs[step] = policy.log_prob(actions[step])
                    action_np = actions[step].cpu().numpy()
                with run.timer("env"):
                    next_obs_np, rewards_np[step], terminated_np[step], truncated, info = envs.step(action_np)
                valid_np[step] = next_valid
                episode_ends_np[step] = wrappers.reset_next(terminated_np[step], truncated, info)
                next_valid = ~episode_ends_np[step]
                next_obs = torch.from_numpy(next_obs_np).to(device)
                run.log_episodes(info, global_step + (step + 1) * args.num_envs * proc.world_size)
            with run.timer("inference"):
                next_value = agent(next_obs)[1]
        global_step += steps_per_iteration
        rewards, terminated, episode_ends, valid = (torch.from_numpy(x).to(device) for x in
                                                    (rewards_np, terminated_np, episode_ends_np, valid_np))
        # A final step whose game just ended has next_valid 0: episode_ends already stops the chain there.
        advantages, returns = compute_gae(rewards, values, next_value, terminated, episode_ends, valid,
                                          args.gamma, args.gae_lambda)

        # Learn: update_epochs passes over the rollout in shuffled minibatches.
        with run.timer("update"):
            torch.set_num_threads(proc.torch_threads)
            b_obs = obs.reshape((-1,) + obs_shape)
            b_actions, b_log_probs, b_values = actions.reshape(-1), log_probs.reshape(-1), values.reshape(-1)
            b_advantages, b_returns, b_valid = advantages.reshape(-1), returns.reshape(-1), valid.reshape(-1).float()
            clipfracs = []
            for epoch in range(args.update_epochs):
                order = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb = order[start : start + minibatch_size]
                    with proc.autocast:
                        logits, new_values = agent(harness.gather_frames(b_obs, mb))
                    new_dist = Categorical(logits=logits, validate_args=False)
                    mb_advantages = b_advantages[mb]
                    if args.norm_adv:
                        mb_advantages = normalize_advantages(mb_advantages, b_valid[mb])
                    loss, stats = ppo_loss(new_dist.log_prob(b_actions[mb]), b_log_probs[mb], mb_advantages,
                                           new_values, b_values[mb], b_returns[mb], new_dist.entropy(),
                                           b_valid[mb], args.clip_coef, args.vf_coef, args.ent_coef, args.clip_vloss)
                    run.check_finite(global_step, loss)  # before the step: NaN never reaches the weights
                    clipfracs.append(stats["clipfrac"])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    proc.average_gradients(agent)  # data parallel: every rank applies the mean gradient
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                if args.target_kl is not None and proc.mean(stats["approx_kl"]) > args.target_kl:
                    break  # all ranks see the same mean, so all stop together

        # Log: the last minibatch's statistics, and clipfrac as the mean over the update's minibatches (as
        # CleanRL logs them).
        stats["clipfrac"] = torch.stack(clipfracs).mean()
        run.log(global_step, {"charts/learning_rate": lr, **{f"losses/{k}": v for k, v in stats.items()},
                              "losses/explained_variance": harness.explained_variance(b_values, b_returns, b_valid)})
        run.log_speed(global_step)
        run.evaluate_if_due(global_step, act)
        if run.checkpoint_due(global_step, final=iteration == num_iterations):
            run.save_checkpoint(global_step, iteration=iteration)
        if run.should_stop(global_step):
            break

    envs.close()
    run.finish(global_step, act)


if __name__ == "__main__":
    main()
