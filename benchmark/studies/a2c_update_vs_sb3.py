"""Is our A2C's learning step Stable-Baselines3's? Both learn from the same rollouts, from the same weights.

SB3's A2C at the rl-zoo Atari settings (benchmark/sb3_speed.py's) collects each rollout of 16 envs x 5
steps and learns from it. Our `a2c_atari.Agent`, started from SB3's weights, learns from the same rollout
with our own pieces: `compute_advantages` (fed SB3's rewards, values and done flags), `a2c_loss`, the
gradient-norm clip and `RMSpropTF`. After every update the script compares the advantages, the losses and
every weight. fp32 and one thread on both sides, so the two differ only by the order of float additions.

What it leaves out, on purpose: the games themselves (the rollouts are SB3's, from SB3's AtariWrapper) and
bf16 (ours acts and learns in bf16 where the CPU has it natively). A difference in learning that remains
when the update is the same lies there.

Runs in the Stable-Baselines3 environment of benchmark/requirements-peers.txt (which throughput.py builds
under the system's temporary folder), from the repository root, so that our scripts import:

    python benchmark/studies/a2c_update_vs_sb3.py --updates 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--updates", type=int, default=50, help="rollouts to learn from, each 16 envs x 5 steps")
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    if opts.updates < 1:
        parser.error(f"--updates {opts.updates} must be at least 1")

    import ale_py
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.utils import obs_as_tensor
    from stable_baselines3.common.vec_env import VecFrameStack

    sys.path.insert(0, str(ROOT))
    import a2c_atari

    gym.register_envs(ale_py)
    torch.set_num_threads(1)
    defaults = a2c_atari.Args()
    env = VecFrameStack(make_atari_env(opts.env_id, n_envs=defaults.num_envs, seed=opts.seed), n_stack=4)
    model = A2C("CnnPolicy", env, n_steps=defaults.num_steps, learning_rate=defaults.learning_rate,
                gamma=defaults.gamma, gae_lambda=defaults.gae_lambda, ent_coef=defaults.ent_coef,
                vf_coef=defaults.vf_coef, max_grad_norm=defaults.max_grad_norm, seed=opts.seed,
                policy_kwargs=dict(optimizer_class=RMSpropTFLike,
                                   optimizer_kwargs=dict(alpha=defaults.rmsprop_alpha, eps=defaults.rmsprop_eps)))
    policy = model.policy
    agent = a2c_atari.Agent(int(env.action_space.n))
    layers = [(agent.network[0], policy.features_extractor.cnn[0]), (agent.network[2], policy.features_extractor.cnn[2]),
              (agent.network[4], policy.features_extractor.cnn[4]),
              (agent.network[7], policy.features_extractor.linear[0]),
              (agent.actor, policy.action_net), (agent.critic, policy.value_net)]
    with torch.no_grad():
        for ours, theirs in layers:
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
    optimizer = a2c_atari.RMSpropTF(agent.parameters(), defaults.learning_rate, defaults.rmsprop_alpha,
                                    defaults.rmsprop_eps)
    print(f"{opts.env_id}, {opts.updates} updates of {defaults.num_envs} envs x {defaults.num_steps} steps; SB3 "
          f"{type(policy.optimizer).__name__} {policy.optimizer.defaults}")
    print("update | reward in rollout | max |advantage diff| | policy loss ours / SB3 | value loss ours / SB3 | "
          "max |weight diff| (max |weight|)")

    _, callback = model._setup_learn(opts.updates * defaults.num_envs * defaults.num_steps, None)
    callback.on_training_start(locals(), globals())
    worst = 0.0
    for update in range(1, opts.updates + 1):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
        buffer = model.rollout_buffer
        # SB3's flags: episode_starts[t] = the observation of step t begins an episode (a done at t - 1), and
        # the dones after the last step. Ours: terminated[t] = a done at t. SB3 has no reset steps (a game's
        # last observation is never acted on), so every step is valid and no episode ends with one.
        with torch.no_grad():
            last_value = policy.predict_values(obs_as_tensor(model._last_obs, policy.device)).flatten()
        dones = np.concatenate([buffer.episode_starts[1:], model._last_episode_starts[None].astype(np.float32)])
        values = torch.as_tensor(buffer.values)
        advantages, returns = a2c_atari.compute_advantages(
            torch.as_tensor(buffer.rewards), values, last_value, torch.as_tensor(dones), torch.zeros_like(values),
            torch.ones_like(values), model.gamma, model.gae_lambda)
        advantage_diff = (advantages - torch.as_tensor(buffer.advantages)).abs().max().item()

        obs = torch.as_tensor(buffer.observations).reshape((-1,) + buffer.obs_shape)
        logits, new_values = agent(obs)
        dist = torch.distributions.Categorical(logits=logits)
        loss, stats = a2c_atari.a2c_loss(dist.log_prob(torch.as_tensor(buffer.actions).reshape(-1).long()),
                                         advantages.reshape(-1), new_values, returns.reshape(-1), dist.entropy(),
                                         torch.ones(obs.shape[0]), defaults.vf_coef, defaults.ent_coef)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), defaults.max_grad_norm)
        optimizer.step()
        model.train()  # SB3's update, on its own advantages

        weight_diff = max((o.weight - t.weight).abs().max().item() for o, t in layers)
        worst = max(worst, weight_diff, advantage_diff)
        if update == 1 or update % 10 == 0 or update == opts.updates:
            logged = model.logger.name_to_value
            print(f"{update} | {buffer.rewards.sum():.0f} | {advantage_diff:.1e} | "
                  f"{stats['policy_loss'].item():.6f} / {logged['train/policy_loss']:.6f} | "
                  f"{stats['value_loss'].item():.6f} / {logged['train/value_loss']:.6f} | {weight_diff:.1e} "
                  f"({max(t.weight.abs().max().item() for _, t in layers):.2f})")
    env.close()
    print(f"largest difference in any advantage or weight over {opts.updates} updates: {worst:.1e}")


if __name__ == "__main__":
    main()
