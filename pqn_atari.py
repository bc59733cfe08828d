"""PQN on Atari: Q-learning from vectorized envs without a replay memory, in one file that reads as the algorithm.

Algorithm: Parallelised Q-Network (Gallici et al. 2024, "Simplifying Deep Temporal Difference Learning",
arXiv 2407.04811, ICLR 2025). A Q-network acts epsilon-greedily in num_envs games for num_steps agent
steps; the rollout's Q(lambda) returns (Watkins 1989; Peng & Williams 1996) become the regression targets
of a few epochs of minibatch updates, as PPO reuses its rollouts. LayerNorm after every hidden layer keeps
the bootstrapped targets stable without a target network, and the many envs decorrelate the samples
without a replay memory. The network is the Nature CNN of Mnih et al. 2015 with LayerNorm. The defaults
are CleanRL's `pqn_atari_envpool.py`: 8 envs x 128 steps, 4 epochs of 4 minibatches, RAdam (Liu et al.
2020, arXiv 1908.03265) at 2.5e-4 annealed linearly to 0, gradient-norm clip 10, gamma 0.99, lambda 0.65,
epsilon 1 -> 0.01 over the first 10% of the run, the MSE between Q(s, a) and the return.

This file began as a copy of `ppo_atari.py`: the rollout, the minibatch loop and every harness call are
PPO's; the network, the acting rule, the targets and the loss are PQN's.

Deliberate differences from CleanRL's file:
  - Episode boundaries follow gymnasium 1.x NEXT_STEP autoreset (see `wrappers.py`), as in the other
    scripts: a reset step weighs nothing; a lost life or a game over stops bootstrapping; a truncation
    (the 108,000-frame cap) bootstraps from the max-Q of the game's last observation (CleanRL's envpool
    run treats the cap as a death).
  - Speed on CPU: uint8 frames until the network divides them by 255, preallocated rollout buffers, and
    the speed flags of `harness.RunArgs`.
  - The run around the algorithm is `harness.py`: checkpoints and `--resume`, Ctrl-C, evaluation (with
    `--eval-epsilon`, as DQN's), `--run MODEL` (or `--run random`) with a video, and `torchrun`
    data-parallel training.

Usage:
    python pqn_atari.py                                   # Breakout, 10M agent steps
    python pqn_atari.py --env-id PongNoFrameskip-v4
    python pqn_atari.py --env-id PongNoFrameskip-v4 --preset fast  # the preset for a CPU (docs/algorithms.md)
    python pqn_atari.py --resume runs/<run_name>          # continue from runs/<run_name>/checkpoint.pt
    python pqn_atari.py --run runs/<run_name>/pqn_atari.model --run-episodes 10
    torchrun --standalone --nproc_per_node 2 pqn_atari.py # data-parallel, 2 processes
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn

import harness
import wrappers


@dataclass
class Args(harness.RunArgs):
    """PQN's settings; the run's (game, steps, envs, files, evaluation, speed) are in harness.RunArgs."""

    # What --preset sets, unless the flag is typed (harness.apply_preset). `cleanrl` is the published defaults.
    PRESETS: ClassVar[dict[str, dict]] = {
        "cleanrl": {},
        # CleanRL's gradient steps per agent step and policy updates per 1,024 agent steps, on minibatches of 128
        # as in Gallici et al. 2024's Atari shape, from 32 envs; schedules that end at about the hour on 2 cores;
        # Dopamine's evaluation epsilon at the end. Why, and what its timed runs showed: docs/algorithms.md.
        "fast": dict(num_envs=32, num_steps=32, num_minibatches=8, update_epochs=2, total_timesteps=2_500_000,
                     end_e=0.001),
    }
    preset: Literal["cleanrl", "fast"] = "cleanrl"
    """`cleanrl`: the defaults below. `fast`, for a CPU: --num-envs 32 --num-steps 32 --num-minibatches 8
    --update-epochs 2 --total-timesteps 2500000 --end-e 0.001 (1.8x the agent steps/s on 2 cores, half the
    arithmetic per gradient step, schedules of about an hour on 2 cores, and a tenth of the random
    actions after the first 10%); any flag typed wins"""

    learning_rate: float = 2.5e-4
    """RAdam learning rate at the start (CleanRL pqn_atari_envpool.py)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over the updates (CleanRL)"""
    num_steps: int = 128
    """agent steps per env per rollout (CleanRL; Gallici et al. 2024 use 32 with 128 envs)"""
    gamma: float = 0.99
    """discount factor per agent step"""
    q_lambda: float = 0.65
    """lambda of the Q(lambda) returns (Gallici et al. 2024, Atari; CleanRL)"""
    num_minibatches: int = 4
    """minibatches per epoch; the rollout of a process must split into them evenly"""
    update_epochs: int = 4
    """passes over each rollout"""
    max_grad_norm: float = 10.0
    """global gradient-norm clip (CleanRL)"""
    start_e: float = 1.0
    """exploration epsilon at the start"""
    end_e: float = 0.01
    """exploration epsilon at the end of the exploration phase (CleanRL)"""
    exploration_fraction: float = 0.1
    """fraction of --total-timesteps over which epsilon falls linearly from start_e to end_e (CleanRL)"""
    eval_epsilon: float = 0.05
    """exploration epsilon of the evaluations and of --run (Mnih et al. 2015, as dqn_atari.py)"""

    num_envs: int = 8
    """parallel game environments per process (CleanRL; under torchrun the job has num_envs x processes)"""


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain `std`, constant bias (Saxe et al. 2014; CleanRL's PQN)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class QNetwork(nn.Module):
    """The Nature CNN (Mnih et al. 2015) with LayerNorm after each convolution and the hidden layer
    (Gallici et al. 2024: the normalization that makes TD learning stable without a target network).

    Takes uint8 frames (N, 4, 84, 84) and scales them to [0, 1] itself, so buffers stay 4x smaller.
    """

    def __init__(self, num_actions: int, channels_last: bool = False):
        super().__init__()
        self.num_actions, self.channels_last = num_actions, channels_last
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)),
            nn.LayerNorm([32, 20, 20]),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.LayerNorm([64, 9, 9]),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.LayerNorm([64, 7, 7]),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.LayerNorm(512),
            nn.ReLU(),
            layer_init(nn.Linear(512, num_actions)),
        )
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values (N, num_actions), float32 even under autocast."""
        if self.channels_last:  # reorder the uint8 frames, 4x cheaper than reordering floats
            obs = obs.contiguous(memory_format=torch.channels_last)
        x = obs.float().mul_(1.0 / 255.0)
        return self.network(x).float()


def q_lambda_returns(
    rewards: torch.Tensor,
    max_q: torch.Tensor,
    next_max_q: torch.Tensor,
    terminated: torch.Tensor,
    episode_ends: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Peng's Q(lambda) returns of a rollout under NEXT_STEP autoreset (Gallici et al. 2024, eq. 5).

    All inputs are (T, N) over T steps of N envs, except next_max_q (N,), max_a Q(obs_T, a) of the
    observation that follows the last step; max_q[t] = max_a Q(obs_t, a) as the rollout saw it. The flags
    mean what they mean in ppo_atari.compute_gae:
      terminated[t]   a life was lost or the game is over: R_t = r_t, nothing is bootstrapped;
      episode_ends[t] the game ended at t (game over or truncation): step t+1 is a reset step, so its
                      return must not flow back; after a truncation obs_{t+1} is still the game's last
                      observation and R_t bootstraps from its max-Q alone;
      valid[t]        step t is no reset step; a reset step's return is 0 (and the loss masks it out).
    R_t = r_t + gamma * (1 - terminated_t) * (lam * c_t * R_{t+1} + (1 - lam * c_t) * max_a Q(obs_{t+1}, a)),
    with c_t = 1 - episode_ends_t, and R_T taken as max_a Q(obs_T, a) (so R_{T-1} bootstraps from it alone).
    With lam = 0 it is the one-step Q-learning target; with lam = 1 the n-step return to the rollout's end.
    Returns (T, N) float32.
    """
    num_steps = rewards.shape[0]
    valid = valid.float()
    not_terminated = 1.0 - terminated.float()
    carry = lam * (1.0 - episode_ends.float())
    next_max = torch.cat([max_q[1:], next_max_q.unsqueeze(0)], dim=0)
    returns = torch.zeros_like(rewards)
    next_return = next_max_q
    for t in reversed(range(num_steps)):
        bootstrap = carry[t] * next_return + (1.0 - carry[t]) * next_max[t]
        next_return = (rewards[t] + gamma * not_terminated[t] * bootstrap) * valid[t]
        returns[t] = next_return
    return returns


def q_loss(q_taken: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between Q(s, a) and the Q(lambda) return over the valid entries (CleanRL: no 1/2)."""
    return harness.masked_mean((q_taken - returns) ** 2, mask.float())


def epsilon_greedy(q_values: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Actions for a batch: uniformly random with probability epsilon, else argmax Q. Draws come from torch's
    stream on the Q-values' device, seeded by the run's seed."""
    explore = torch.rand(len(q_values), device=q_values.device) < epsilon
    random_actions = torch.randint(q_values.shape[1], (len(q_values),), device=q_values.device)
    return torch.where(explore, random_actions, q_values.argmax(dim=1))


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """`start` at t = 0, linearly to `end` at t = duration, then `end`: one signature in every script, for a
    learning rate over updates and an exploration epsilon over agent steps."""
    frac = min(t / duration, 1.0) if duration > 0 else 1.0
    return start * (1.0 - frac) + end * frac


def evaluation_act(q_network: QNetwork, epsilon: float, proc: harness.Process):
    """Acting outside training (evaluation, --run): epsilon-greedy with --eval-epsilon."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), proc.autocast:
            q_values = q_network(torch.from_numpy(obs).to(proc.device))
        return epsilon_greedy(q_values, epsilon).cpu().numpy()

    return act


def check_args(args: Args) -> None:
    """PQN's settings that cannot run end in one line (the shared ones were checked by harness.parse)."""
    harness.check_range(args, positive=("learning_rate",), non_negative=("max_grad_norm",),
                        unit_interval=("gamma", "q_lambda", "start_e", "end_e", "exploration_fraction",
                                       "eval_epsilon"),
                        at_least_one=("num_steps", "num_minibatches", "update_epochs"))
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        harness.fail(f"a rollout of {args.num_envs} envs x {args.num_steps} steps does not split into "
                     f"{args.num_minibatches} equal minibatches: change --num-minibatches, --num-envs or --num-steps")


def main() -> None:
    args, checkpoint = harness.parse(Args, algo="pqn")
    check_args(args)
    proc = harness.setup_process(args)
    device = proc.device
    if args.run is not None:
        harness.replay(args, proc, "pqn", lambda n: QNetwork(n, args.channels_last),
                       lambda q_network: evaluation_act(q_network, args.eval_epsilon, proc))
        return

    batch_size = args.num_envs * args.num_steps  # transitions per rollout of one process
    minibatch_size = batch_size // args.num_minibatches
    steps_per_iteration = batch_size * proc.world_size  # agent steps of the whole job per update
    num_iterations = args.total_timesteps // steps_per_iteration
    if num_iterations < 1:
        harness.fail(f"--total-timesteps {args.total_timesteps} is less than one rollout of the job "
                     f"({steps_per_iteration})")
    exploration_steps = int(args.exploration_fraction * args.total_timesteps)

    harness.check_rollout_memory(args.num_envs, args.num_steps, device)
    envs = wrappers.make_vector_env(args.env_id, args.num_envs, backend=args.env_backend, num_threads=proc.env_threads,
                                    repeat_action_probability=args.repeat_action_probability)
    num_actions = int(envs.single_action_space.n)
    q_network = QNetwork(num_actions, channels_last=args.channels_last).to(device)
    if args.compile:  # docs/speed.md: a start-up compile, other numerics
        q_network.compile()
    optimizer = torch.optim.RAdam(q_network.parameters(), lr=args.learning_rate)
    harness.start_from(checkpoint, q_network, optimizer, args, proc)
    run = harness.Run(args, proc, "pqn", q_network, optimizer, checkpoint, num_iterations * steps_per_iteration,
                      num_actions, settings=dict(batch_size=batch_size, minibatch_size=minibatch_size,
                                                 num_iterations=num_iterations, exploration_steps=exploration_steps))
    global_step = run.start_step
    if global_step % steps_per_iteration:
        harness.fail(f"the checkpoint's agent step {global_step} is not a whole number of this job's rollouts of "
                     f"{steps_per_iteration}: resume with the --num-envs and processes it was trained with")
    start_iteration = global_step // steps_per_iteration + 1  # the updates done, whatever the job's shape was
    act = evaluation_act(q_network, args.eval_epsilon, proc)

    # Rollout buffers, preallocated; slot t holds step t of every env, as in ppo_atari.py.
    # Done-flag convention (NEXT_STEP autoreset): terminated[t] = life lost or game over after action t,
    # do not bootstrap; episode_ends[t] = game over or truncation at t, so step t+1 is a reset step;
    # valid[t] = 0 for a reset step (obs[t] is the last frame of a finished game, its action is ignored),
    # which the loss weighs 0. A truncation is not a termination: it bootstraps from max Q(obs[t+1]).
    obs_shape = envs.single_observation_space.shape
    obs = harness.frame_buffer((args.num_steps, args.num_envs) + obs_shape, args.channels_last, device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    max_q = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards_np = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminated_np, episode_ends_np, valid_np = (np.zeros((args.num_steps, args.num_envs), dtype=bool) for _ in range(3))

    # Emulators cannot be snapshotted: a resumed run starts new games, seeded from the seed and the step.
    next_obs = torch.from_numpy(envs.reset(seed=proc.seed + global_step)[0]).to(device)
    next_valid = np.ones(args.num_envs, dtype=bool)  # next_obs is not the last frame of a finished game

    for iteration in range(start_iteration, num_iterations + 1):
        lr = args.learning_rate
        if args.anneal_lr:  # to 0 over the run, one step per update (CleanRL)
            lr = linear_schedule(args.learning_rate, 0.0, num_iterations, iteration - 1)
        optimizer.param_groups[0]["lr"] = lr

        # Act, step, store: num_steps steps of every env, epsilon-greedy with the current Q-network.
        torch.set_num_threads(proc.inference_threads)
        with torch.inference_mode(), proc.autocast:
            for step in range(args.num_steps):
                epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps,
                                          global_step + step * args.num_envs * proc.world_size)
                with run.timer("inference"):
                    obs[step] = next_obs
                    q_values = q_network(obs[step])
                    # a divergence shows here first, after the update that blew the weights up
                    run.check_finite(global_step + step * args.num_envs * proc.world_size, q_values, "the Q-values")
                    max_q[step] = q_values.max(dim=1).values
                    actions[step] = epsilon_greedy(q_values, epsilon)
                    action_np = actions[step].cpu().numpy()
                with run.timer("env"):
                    next_obs_np, rewards_np[step], terminated_np[step], truncated, info = envs.step(action_np)
                valid_np[step] = next_valid
                episode_ends_np[step] = wrappers.reset_next(terminated_np[step], truncated, info)
                next_valid = ~episode_ends_np[step]
                next_obs = torch.from_numpy(next_obs_np).to(device)
                run.log_episodes(info, global_step + (step + 1) * args.num_envs * proc.world_size)
            with run.timer("inference"):
                next_max_q = q_network(next_obs).max(dim=1).values
        global_step += steps_per_iteration
        rewards, terminated, episode_ends, valid = (torch.from_numpy(x).to(device) for x in
                                                    (rewards_np, terminated_np, episode_ends_np, valid_np))
        returns = q_lambda_returns(rewards, max_q, next_max_q, terminated, episode_ends, valid,
                                   args.gamma, args.q_lambda)

        # Learn: update_epochs passes over the rollout in shuffled minibatches, Q(s, a) regressed on R.
        with run.timer("update"):
            torch.set_num_threads(proc.torch_threads)
            b_obs = obs.reshape((-1,) + obs_shape)
            b_actions, b_returns, b_valid = actions.reshape(-1), returns.reshape(-1), valid.reshape(-1).float()
            for epoch in range(args.update_epochs):
                order = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb = order[start : start + minibatch_size]
                    with proc.autocast:
                        q_values = q_network(harness.gather_frames(b_obs, mb))
                    q_taken = q_values.gather(1, b_actions[mb].unsqueeze(1)).squeeze(1)
                    loss = q_loss(q_taken, b_returns[mb], b_valid[mb])
                    run.check_finite(global_step, loss)  # before the step: NaN never reaches the weights
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    proc.average_gradients(q_network)  # data parallel: every rank applies the mean gradient
                    nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                    optimizer.step()

        # Log: the last minibatch's loss and Q-values, as CleanRL logs them.
        run.log(global_step, {"charts/learning_rate": lr, "charts/epsilon": epsilon, "losses/td_loss": loss,
                              "losses/q_values": q_taken.detach().mean()})
        run.log_speed(global_step, eps=f"{epsilon:.3f}")
        run.evaluate_if_due(global_step, act)
        if run.checkpoint_due(global_step, final=iteration == num_iterations):
            run.save_checkpoint(global_step, iteration=iteration)
        if run.should_stop(global_step):
            break

    envs.close()
    run.finish(global_step, act)


if __name__ == "__main__":
    main()
