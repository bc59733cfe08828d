"""The scripts repeat a skeleton on purpose (each must read alone); these tests keep the copies in step.

What must stay identical across ppo_atari.py and dqn_atari.py: the experiment fields of `Args` (names,
types, defaults, help), seeding and file helpers, and the model/checkpoint format. A change to one copy
fails here until the other copy follows.
"""

import dataclasses
import inspect
import re

import pytest
import torch

import dqn_atari
import ppo_atari

SCRIPTS = {"ppo": ppo_atari, "dqn": dqn_atari}

# Fields that mean the same in every script.
EXPERIMENT_FIELDS = [
    "seed", "torch_deterministic", "cuda", "run_name", "runs_dir", "env_id", "total_timesteps",
    "num_envs", "env_backend", "env_threads", "torch_threads", "flush_denormal", "save_model",
    "checkpoint_every", "resume", "run", "run_episodes", "video", "progress",
]
# Of these, the help may say more where a script does more (PPO's ranks under torchrun, DQN's replay file
# on resume), and num_envs keeps each CleanRL default (8 for PPO, 1 for DQN): for them only the declared
# name and type must agree.
HELP_MAY_DIFFER = {"seed", "total_timesteps", "torch_threads", "resume", "num_envs"}
SHARED_HELPERS = [
    "native_bf16", "fail", "given_on_command_line", "save_atomic", "load_file", "rng_states",
    "set_rng_states", "model_file", "settings_table", "StopRequest",
]


def normalized(source: str) -> str:
    """Source with the algorithm's own names replaced, so only real differences remain."""
    for a, b in [("ppo_atari", "ALGO_atari"), ("dqn_atari", "ALGO_atari"), ('"ppo"', '"ALGO"'),
                 ('"dqn"', '"ALGO"'), ("q_network: QNetwork", "net: NET"), ("agent: Agent", "net: NET"),
                 ("q_network.", "net."), ("agent.", "net.")]:
        source = source.replace(a, b)
    return source


def field_source(module, name: str) -> str:
    """The declaration line of an Args field and the docstring under it, as written."""
    source = inspect.getsource(module.Args)
    match = re.search(rf"^    {name}: .*?\n(    \"\"\".*?\"\"\"\n)?", source, re.M | re.S)
    assert match, f"{module.__name__}.Args has no field {name}"
    return match.group(0)


@pytest.mark.parametrize("name", EXPERIMENT_FIELDS)
def test_experiment_fields_are_declared_alike(name):
    ppo, dqn = field_source(ppo_atari, name), field_source(dqn_atari, name)
    if name in HELP_MAY_DIFFER:
        ppo, dqn = (s.split("=")[0] for s in (ppo, dqn))
    assert ppo == dqn


def test_experiment_fields_resolve_to_the_same_values():
    ppo = dataclasses.asdict(ppo_atari.Args())
    dqn = dataclasses.asdict(dqn_atari.Args())
    for name in EXPERIMENT_FIELDS:
        if name != "num_envs":
            assert ppo[name] == dqn[name], name
    assert (ppo["exp_name"], dqn["exp_name"]) == ("ppo_atari", "dqn_atari")


@pytest.mark.parametrize("name", SHARED_HELPERS)
def test_shared_helpers_are_the_same_code(name):
    ppo = normalized(inspect.getsource(getattr(ppo_atari, name)))
    dqn = normalized(inspect.getsource(getattr(dqn_atari, name)))
    assert ppo == dqn


def test_model_files_have_the_same_format(tmp_path):
    files = {
        "ppo": ppo_atari.model_file(ppo_atari.Args(), ppo_atari.Agent(4), 4),
        "dqn": dqn_atari.model_file(dqn_atari.Args(), dqn_atari.QNetwork(4), 4),
    }
    assert files["ppo"].keys() == files["dqn"].keys()
    for algo, data in files.items():
        assert data["algo"] == algo and data["format"] == 1
        path = tmp_path / f"{algo}.model"
        torch.save(data, path)
        loaded = torch.load(path, weights_only=True)  # plain types only: no code can run on load
        assert loaded["num_actions"] == 4 and loaded["env_id"] == data["env_id"]
