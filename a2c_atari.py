"""A2C on Atari: synchronous advantage actor-critic, in one file that reads as the algorithm.

Algorithm: the synchronous form of A3C (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement
Learning", arXiv 1602.01783): num_envs games step together for num_steps agent steps, then one gradient
step on the whole rollout, with n-step returns as the critic's target, the advantage R - V(s) weighting
the policy gradient, and an entropy bonus. The network is the Nature CNN of Mnih et al. 2015 with a policy
head and a value head. The defaults are the standard Atari A2C of OpenAI Baselines (`baselines/a2c`) and
of the Stable-Baselines3 rl-zoo (`hyperparams/a2c.yml`, atari): 16 envs x 5 steps, RMSprop in
TensorFlow's form with lr 7e-4, alpha 0.99, eps 1e-5, value coefficient 0.25 (the zoo's; Baselines 0.5),
a constant learning rate (the zoo's; Baselines annealed it: --anneal-lr), no advantage normalization.
`--optimizer adam` is the choice of Distributed BA3C (Adamski et al. 2018, arXiv 1801.02852).

Deliberate differences from SB3's A2C:
  - Episode boundaries follow gymnasium 1.x NEXT_STEP autoreset (see `wrappers.py`), as in ppo_atari.py:
    the transition whose observation is the last one of a finished game is a *reset step* and weighs
    nothing in the loss; a lost life or a game over stops bootstrapping; a truncation (the 108,000-frame
    cap) bootstraps from the value of the game's last observation. SB3's autoreset has no reset step,
    so its rollouts hold a few more transitions that count.
  - Speed on CPU: observations stay uint8 until the network, rollout buffers are preallocated, the
    per-step flags are gathered on the host and moved once per rollout, and the losses are logged every
    --log-every agent steps instead of every update of 80.
  - The run around the algorithm is `harness.py`: checkpoints and `--resume`, Ctrl-C, evaluation,
    `--run MODEL` with a video, and `torchrun` data-parallel training (as in Adamski et al. 2018).

Usage:
    python a2c_atari.py                                   # Breakout, 10M agent steps
    python a2c_atari.py --env-id PongNoFrameskip-v4
    python a2c_atari.py --resume runs/<run_name>          # continue from runs/<run_name>/checkpoint.pt
    python a2c_atari.py --run runs/<run_name>/a2c_atari.model --run-episodes 10
    torchrun --standalone --nproc_per_node 2 a2c_atari.py # data-parallel, 2 processes
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
from torch.distributions.categorical import Categorical

import harness
import wrappers


@dataclass
class Args(harness.RunArgs):
    """A2C's settings; the run's (game, steps, envs, files, evaluation, speed) are in harness.RunArgs."""

    optimizer: Literal["rmsprop_tf", "adam"] = "rmsprop_tf"
    """`rmsprop_tf`: RMSprop in TensorFlow's form (OpenAI Baselines; SB3's RMSpropTFLike); `adam`: Adamski et al. 2018"""
    learning_rate: float = 7e-4
    """RMSprop learning rate (OpenAI Baselines' a2c, SB3's A2C and the rl-zoo)"""
    rmsprop_alpha: float = 0.99
    """RMSprop decay of the squared-gradient average (OpenAI Baselines, SB3)"""
    rmsprop_eps: float = 1e-5
    """RMSprop epsilon, added inside the square root (OpenAI Baselines; the rl-zoo's RMSpropTFLike eps)"""
    adam_learning_rate: float = 1e-3
    """Adam learning rate (Adamski et al. 2018, their best Breakout run; with --optimizer adam)"""
    adam_eps: float = 1e-8
    """Adam epsilon (Adamski et al. 2018; their betas 0.8 and 0.75 are not taken: torch's 0.9 and 0.999)"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0 over the updates, as OpenAI Baselines' a2c (the rl-zoo keeps it constant)"""
    num_steps: int = 5
    """agent steps per env per update: the n of the n-step returns (t_max = 5 in Mnih et al. 2016)"""
    gamma: float = 0.99
    """discount factor per agent step"""
    gae_lambda: float = 1.0
    """1: plain n-step returns (Mnih et al. 2016; SB3's A2C default); below 1: GAE in the rollout (Schulman et al. 2015)"""
    ent_coef: float = 0.01
    """entropy bonus coefficient (Mnih et al. 2016; Baselines; rl-zoo)"""
    vf_coef: float = 0.25
    """value loss coefficient (rl-zoo a2c.yml, atari; OpenAI Baselines uses 0.5)"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip (OpenAI Baselines, SB3)"""
    log_every: int = 1_000
    """agent steps between writes of the losses, charts/SPS and time/<phase>: about PPO's 1,024 per update, not every 80"""

    num_envs: int = 16
    """parallel game environments per process (OpenAI Baselines' a2c, the rl-zoo; under torchrun, num_envs x processes)"""
    eval_every: int = 1_000_000
    """agent steps between evaluations: twice PPO's, as A2C runs more agent steps per second (one pass, not 4 epochs)"""


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop in TensorFlow's form (Tieleman & Hinton 2012, as tf.train.RMSPropOptimizer computes it), the
    optimizer of OpenAI Baselines' A2C; SB3's RMSpropTFLike (momentum 0, not centered) is the same form.

    For each parameter p with gradient g, every step:
        v <- alpha * v + (1 - alpha) * g^2,   v starting at 1 (torch.optim.RMSprop starts it at 0)
        p <- p - lr * g / sqrt(v + eps)       eps inside the root (torch.optim.RMSprop: sqrt(v) + eps)
    Starting at 1, the first steps are about lr * g; started at 0, the first step would be lr * sign(g) * 10.
    No momentum, not centered, no weight decay: the defaults of both, which the rl-zoo keeps.
    """

    def __init__(self, params, lr: float, alpha: float = 0.99, eps: float = 1e-5):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["square_avg"] = torch.ones_like(p)
            square_avgs = [self.state[p]["square_avg"] for p in params]
            torch._foreach_mul_(square_avgs, group["alpha"])  # one call for all tensors (torch.optim's foreach form)
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1.0 - group["alpha"])
            denominators = torch._foreach_add(square_avgs, group["eps"])
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain `std`, constant bias (Saxe et al. 2014; OpenAI Baselines, SB3)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """The Nature CNN (Mnih et al. 2015) with a policy head and a value head on its 512 features.

    Takes uint8 frames (N, 4, 84, 84) and scales them to [0, 1] itself, so buffers stay 4x smaller.
    The policy head starts near uniform (gain 0.01), the value head at gain 1 (Baselines, SB3).
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
        x = obs.float().mul_(1.0 / 255.0)
        hidden = self.network(x)
        return self.actor(hidden).float(), self.critic(hidden).float().squeeze(-1)


def compute_advantages(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor,
                       terminated: torch.Tensor, episode_ends: torch.Tensor, valid: torch.Tensor,
                       gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns of a rollout under NEXT_STEP autoreset: n-step returns at gae_lambda = 1.

    All inputs are (T, N) over T steps of N envs, except next_value (N,), the value of the observation
    that follows the last step. At step t the agent saw obs_t, got rewards[t] and then obs_{t+1}:
      terminated[t]   a life was lost or the game is over: obs_{t+1} has no future, do not bootstrap;
      episode_ends[t] the game ended at t (game over or truncation): step t+1 is a reset step, so nothing
                      flows back from t+1 to t. After a truncation obs_{t+1} is still the game's last
                      observation, and step t bootstraps from its value;
      valid[t]        step t is no reset step; a reset step gets advantage 0 (and the loss masks it out).
    delta_t = r_t + gamma * V(obs_{t+1}) * (1 - terminated_t) - V(obs_t)
    A_t     = delta_t + gamma * lambda * (1 - terminated_t) * (1 - episode_ends_t) * A_{t+1}
    With lambda = 1, A_t + V(obs_t) is the n-step return of Mnih et al. 2016: the discounted rewards up to
    the end of the rollout or a truncation plus gamma^k times the value there, or up to a termination alone.
    With lambda < 1 it is generalized advantage estimation (Schulman et al. 2015) within the rollout.
    Returns (advantages, returns = advantages + values), both (T, N) float32.
    """
    valid = valid.float()
    not_terminated = 1.0 - terminated.float()
    carry = gamma * gae_lambda * not_terminated * (1.0 - episode_ends.float())
    next_values = torch.cat([values[1:], next_value.unsqueeze(0)], dim=0)
    deltas = rewards + gamma * next_values * not_terminated - values
    advantages = torch.empty_like(values)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        last = (deltas[t] + carry[t] * last) * valid[t]
        advantages[t] = last
    return advantages, advantages + values


def a2c_loss(log_probs: torch.Tensor, advantages: torch.Tensor, values: torch.Tensor, returns: torch.Tensor,
             entropy: torch.Tensor, mask: torch.Tensor, vf_coef: float,
             ent_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The A2C objective to minimize on one rollout, and its statistics (detached).

    policy_loss = -mean(A * log pi(a|s))     (Mnih et al. 2016; A is a constant: no gradient flows into it)
    value_loss  = mean((R - V(s))^2)         (SB3's F.mse_loss: no factor 1/2)
    loss        = policy_loss - ent_coef * mean(entropy) + vf_coef * value_loss
    Every mean runs over the entries where mask is 1, so reset steps weigh nothing.
    """
    mask = mask.float()
    policy_loss = -harness.masked_mean(advantages.detach() * log_probs, mask)
    value_loss = harness.masked_mean((returns - values) ** 2, mask)
    entropy_mean = harness.masked_mean(entropy, mask)
    loss = policy_loss - ent_coef * entropy_mean + vf_coef * value_loss
    stats = {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "entropy": entropy_mean.detach()}
    return loss, stats


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """`start` at t = 0, linearly to `end` at t = duration, then `end`: one signature in every script, for a
    learning rate over updates and an exploration epsilon over agent steps."""
    frac = min(t / duration, 1.0) if duration > 0 else 1.0
    return start * (1.0 - frac) + end * frac


def check_args(args: Args) -> None:
    """A2C's settings that cannot run end in one line (the shared ones were checked by harness.parse)."""
    harness.check_range(args, positive=("learning_rate", "adam_learning_rate", "max_grad_norm"),
                        unit_interval=("gamma", "gae_lambda"), probability=("rmsprop_alpha",),
                        non_negative=("ent_coef", "vf_coef", "rmsprop_eps", "adam_eps"),
                        at_least_one=("num_steps", "log_every"))


def make_optimizer(agent: Agent, args: Args) -> tuple[torch.optim.Optimizer, float]:
    """The optimizer of --optimizer and its learning rate."""
    if args.optimizer == "adam":
        return torch.optim.Adam(agent.parameters(), lr=args.adam_learning_rate, eps=args.adam_eps,
                                fused=args.fused_adam or None), args.adam_learning_rate
    return RMSpropTF(agent.parameters(), args.learning_rate, args.rmsprop_alpha, args.rmsprop_eps), args.learning_rate


def main() -> None:
    args, checkpoint = harness.parse(Args, algo="a2c", resumable=("log_every",))
    check_args(args)
    proc = harness.setup_process(args)
    device = proc.device
    if args.run is not None:
        harness.replay(args, proc, "a2c", lambda n: Agent(n, args.channels_last),
                       lambda agent: harness.sampling_act(agent, proc))
        return

    batch_size = args.num_envs * args.num_steps  # transitions per rollout of one process
    steps_per_iteration = batch_size * proc.world_size  # agent steps of the whole job per update
    num_iterations = args.total_timesteps // steps_per_iteration
    if num_iterations < 1:
        harness.fail(f"--total-timesteps {args.total_timesteps} is less than one rollout of the job "
                     f"({steps_per_iteration})")

    harness.check_rollout_memory(args.num_envs, args.num_steps, device)
    envs = wrappers.make_vector_env(args.env_id, args.num_envs, backend=args.env_backend, num_threads=proc.env_threads,
                                    repeat_action_probability=args.repeat_action_probability)
    num_actions = int(envs.single_action_space.n)
    agent = Agent(num_actions, channels_last=args.channels_last).to(device)
    if args.compile:  # docs/speed.md: a start-up compile, other numerics
        agent.compile()
    optimizer, learning_rate = make_optimizer(agent, args)
    harness.start_from(checkpoint, agent, optimizer, args, proc)
    run = harness.Run(args, proc, "a2c", agent, optimizer, checkpoint, num_iterations * steps_per_iteration,
                      num_actions, settings=dict(batch_size=batch_size, num_iterations=num_iterations))
    global_step = run.start_step
    if global_step % steps_per_iteration:
        harness.fail(f"the checkpoint's agent step {global_step} is not a whole number of this job's rollouts of "
                     f"{steps_per_iteration}: resume with the --num-envs and processes it was trained with")
    start_iteration = global_step // steps_per_iteration + 1  # the updates done, whatever the job's shape was
    next_log = (global_step // args.log_every + 1) * args.log_every
    act = harness.sampling_act(agent, proc)

    # Rollout buffers, preallocated; slot t holds step t of every env. The network's inputs and outputs live
    # on the device, the frames in the network's memory format (harness.frame_buffer); the per-step flags
    # from the envs are gathered in NumPy and moved once per rollout.
    # Done-flag convention (NEXT_STEP autoreset): terminated[t] = life lost or game over after action t,
    # do not bootstrap; episode_ends[t] = game over or truncation at t, so step t+1 is a reset step;
    # valid[t] = 0 for a reset step (obs[t] is the last frame of a finished game, its action is ignored),
    # which the loss weighs 0. A truncation is not a termination: it bootstraps from V(obs[t+1]).
    obs_shape = envs.single_observation_space.shape
    obs = harness.frame_buffer((args.num_steps, args.num_envs) + obs_shape, args.channels_last, device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards_np = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminated_np, episode_ends_np, valid_np = (np.zeros((args.num_steps, args.num_envs), dtype=bool) for _ in range(3))

    # Emulators cannot be snapshotted: a resumed run starts new games, seeded from the seed and the step.
    next_obs = torch.from_numpy(envs.reset(seed=proc.seed + global_step)[0]).to(device)
    next_valid = np.ones(args.num_envs, dtype=bool)  # next_obs is not the last frame of a finished game
    switch_threads = proc.inference_threads != proc.torch_threads

    for iteration in range(start_iteration, num_iterations + 1):
        lr = linear_schedule(learning_rate, 0.0, num_iterations, iteration - 1) if args.anneal_lr else learning_rate
        optimizer.param_groups[0]["lr"] = lr

        # Act, step, store: num_steps steps of every env with the current policy. The rollout is one autocast
        # region, so autocast casts the weights to bf16 once and reuses them (its cache lives as long as the
        # region) instead of at every step; the parameters do not change until the update.
        if switch_threads:
            torch.set_num_threads(proc.inference_threads)
        with torch.inference_mode(), proc.autocast:
            for step in range(args.num_steps):
                with run.timer("inference"):
                    obs[step] = next_obs
                    logits, values[step] = agent(obs[step])
                    # a divergence shows here first, after the update that blew the weights up
                    run.check_finite(global_step + step * args.num_envs * proc.world_size, logits, "the policy's logits")
                    actions[step] = Categorical(logits=logits, validate_args=False).sample()
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
        advantages, returns = compute_advantages(rewards, values, next_value, terminated, episode_ends, valid,
                                                 args.gamma, args.gae_lambda)

        # Learn: one gradient step on the whole rollout (the parameters acted in it, so it is on-policy).
        with run.timer("update"):
            if switch_threads:
                torch.set_num_threads(proc.torch_threads)
            b_valid = valid.reshape(-1).float()
            with proc.autocast:
                logits, new_values = agent(obs.reshape((-1,) + obs_shape))
            policy = Categorical(logits=logits, validate_args=False)
            loss, stats = a2c_loss(policy.log_prob(actions.reshape(-1)), advantages.reshape(-1), new_values,
                                   returns.reshape(-1), policy.entropy(), b_valid, args.vf_coef, args.ent_coef)
            run.check_finite(global_step, loss)  # before the step: NaN never reaches the weights
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            proc.average_gradients(agent)  # data parallel: every rank applies the mean gradient
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()

        # Log every --log-every agent steps: this update's statistics.
        if global_step >= next_log or iteration == num_iterations:
            next_log = (global_step // args.log_every + 1) * args.log_every
            run.log(global_step, {"charts/learning_rate": lr, **{f"losses/{k}": v for k, v in stats.items()},
                                  "losses/explained_variance": harness.explained_variance(values.reshape(-1),
                                                                                  returns.reshape(-1), b_valid)})
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
