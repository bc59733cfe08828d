"""How much of A2C's gradient survives bf16 autocast: one rollout, the gradient in fp32 and in bf16.

A2C does not normalize its advantages, so early in a run its policy term is tiny beside the value term. In
the shared layers the two are summed. This script plays one game's worth of random-policy steps with
a2c_atari.py's own network, advantages and loss (16 envs, and the last rollout of 5 steps is used). It
prints three norms for some layers: the whole gradient in fp32, the policy term alone in fp32, and the
difference between the bf16 and the fp32 gradients. Where that difference is much larger than the policy
term, bf16 buries the policy's signal in those layers.

    python benchmark/studies/bf16_gradients.py         # Breakout, seed 0
    python benchmark/studies/bf16_gradients.py --env-id PongNoFrameskip-v4 --steps 400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.distributions.categorical import Categorical

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import a2c_atari  # noqa: E402
import wrappers  # noqa: E402

LAYERS = ("network.0.weight", "network.2.weight", "network.4.weight", "network.7.weight", "actor.weight",
          "critic.weight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--steps", type=int, default=200, help="agent steps per env to play first (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    torch.manual_seed(opts.seed)
    num_envs, num_steps = 16, 5
    envs = wrappers.make_vector_env(opts.env_id, num_envs)
    agent = a2c_atari.Agent(int(envs.single_action_space.n), channels_last=True)
    obs_np, _ = envs.reset(seed=opts.seed)
    rollout = []
    with torch.no_grad():
        for _ in range(max(opts.steps, num_steps)):
            obs = torch.from_numpy(obs_np)
            logits, value = agent(obs)
            action = Categorical(logits=logits).sample()
            obs_np, reward, terminated, truncated, info = envs.step(action.numpy())
            rollout = (rollout + [(obs, action, value, torch.from_numpy(np.asarray(reward, np.float32)),
                                   torch.from_numpy(terminated),
                                   torch.from_numpy(wrappers.reset_next(terminated, truncated, info)))])[-num_steps:]
        _, next_value = agent(torch.from_numpy(obs_np))
    obs, actions, values, rewards, terminated, episode_ends = (torch.stack(x) for x in zip(*rollout))
    valid = torch.ones_like(terminated)
    advantages, returns = a2c_atari.compute_advantages(rewards, values, next_value, terminated, episode_ends, valid,
                                                       0.99, 1.0)

    def gradient(bf16: bool, policy_only: bool) -> dict[str, torch.Tensor]:
        agent.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, new_values = agent(obs.reshape(-1, *obs.shape[2:]))
        policy = Categorical(logits=logits, validate_args=False)
        log_probs = policy.log_prob(actions.reshape(-1))
        loss, _ = a2c_atari.a2c_loss(log_probs, advantages.reshape(-1), new_values, returns.reshape(-1),
                                     policy.entropy(), valid.reshape(-1).float(), 0.25, 0.01)
        if policy_only:
            loss = -(advantages.reshape(-1) * log_probs).mean()
        loss.backward()
        return {n: (p.grad if p.grad is not None else torch.zeros_like(p)).clone() for n, p in agent.named_parameters()}

    full32, full16, policy32 = gradient(False, False), gradient(True, False), gradient(False, True)
    print(f"{opts.env_id}, the last rollout of {num_envs} envs x {num_steps} steps after {opts.steps} random-policy "
          f"steps: reward sum {rewards.sum():.0f}, mean |advantage| {advantages.abs().mean():.4f}\n")
    print("| layer | whole gradient, fp32 | policy term, fp32 | bf16 - fp32 | (bf16 - fp32) / policy term |")
    print("|---|---:|---:|---:|---:|")
    for name in LAYERS:
        error, signal = (full16[name] - full32[name]).norm().item(), policy32[name].norm().item()
        ratio = f"{error / signal:,.1f}" if signal > 0 else "-"
        print(f"| {name} | {full32[name].norm():.2e} | {signal:.2e} | {error:.2e} | {ratio} |")


if __name__ == "__main__":
    main()
