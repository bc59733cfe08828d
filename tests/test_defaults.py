"""Our defaults are CleanRL's: PPO's, DQN's `cleanrl` preset and PQN's, field by field.

CLEANRL holds CleanRL's published defaults, copied by hand from the `Args` dataclasses of its files at
commit fe8d8a0 (https://github.com/vwxyzjn/cleanrl/tree/fe8d8a0: cleanrl/ppo_atari.py, cleanrl/dqn_atari.py,
cleanrl/pqn_atari_envpool.py), so that these tests run anywhere, CI included, which clones this repository
alone. Where CleanRL's files are at hand (a CleanRL checkout named by $CLEANRL_DIR, else the workplace's copy
in ../shared/peers/cleanrl beside this repository), the last test reads each file's `Args` with `ast` and
checks the table against it; elsewhere it is skipped. The files are read, not imported: they need gym 0.29
and EnvPool. Our A2C has no CleanRL counterpart, so it has no test here."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dqn_atari  # noqa: E402
import harness  # noqa: E402
import ppo_atari  # noqa: E402
import pqn_atari  # noqa: E402

# CleanRL's defaults at fe8d8a0, under CleanRL's own names (agent steps wherever it counts steps).
CLEANRL = {
    "ppo_atari.py": dict(
        total_timesteps=10_000_000, learning_rate=2.5e-4, num_envs=8, num_steps=128, anneal_lr=True, gamma=0.99,
        gae_lambda=0.95, num_minibatches=4, update_epochs=4, norm_adv=True, clip_coef=0.1, clip_vloss=True,
        ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, target_kl=None),
    "dqn_atari.py": dict(
        total_timesteps=10_000_000, learning_rate=1e-4, num_envs=1, buffer_size=1_000_000, gamma=0.99,
        target_network_frequency=1000, batch_size=32, start_e=1, end_e=0.01, exploration_fraction=0.1,
        learning_starts=80_000, train_frequency=4),
    "pqn_atari_envpool.py": dict(
        total_timesteps=10_000_000, learning_rate=2.5e-4, num_envs=8, num_steps=128, anneal_lr=True, gamma=0.99,
        num_minibatches=4, update_epochs=4, max_grad_norm=10.0, start_e=1, end_e=0.01, exploration_fraction=0.1,
        q_lambda=0.65),
}

# CleanRL's algorithm settings (its `Args` from env_id on) that the table leaves out, and why.
RUNTIME = {"batch_size": "0, computed at run time", "minibatch_size": "0, computed at run time",
           "num_iterations": "0, computed at run time"}
NOT_COMPARED = {
    "ppo_atari.py": {"env_id": "the game: ours asks for one too, with the same default", **RUNTIME},
    "dqn_atari.py": {"env_id": "the game", "tau": "1.0, a hard copy to the target network, which ours always makes"},
    "pqn_atari_envpool.py": {"env_id": "EnvPool's Breakout-v5; ours runs BreakoutNoFrameskip-v4 with its wrappers",
                             **RUNTIME},
}


def test_ppo_defaults_are_cleanrls():
    args = ppo_atari.Args()
    assert {name: getattr(args, name) for name in CLEANRL["ppo_atari.py"]} == CLEANRL["ppo_atari.py"]


def test_dqn_cleanrl_preset_is_cleanrls(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["dqn_atari.py", "--preset", "cleanrl"])
    args, _ = harness.parse(dqn_atari.Args, algo="dqn")  # the values a `--preset cleanrl` run uses
    assert args == dqn_atari.Args()  # the default preset, which is the flags' own defaults
    exploration_steps = dqn_atari.exploration_duration(args.exploration_steps, args.total_timesteps)
    ours = dict(total_timesteps=args.total_timesteps, learning_rate=args.learning_rate, num_envs=args.num_envs,
                buffer_size=args.buffer_size, gamma=args.gamma, target_network_frequency=args.target_network_frequency,
                batch_size=args.batch_size, start_e=args.start_e, end_e=args.end_e,
                exploration_fraction=exploration_steps / args.total_timesteps,
                learning_starts=args.learning_starts, train_frequency=args.train_frequency)
    assert ours == pytest.approx(CLEANRL["dqn_atari.py"])
    assert (args.optimizer, args.loss) == ("adam", "mse")  # CleanRL's optim.Adam and F.mse_loss
    # CleanRL's exploration is a fraction of the run, whatever its length: 10% of 2M is 200,000 agent steps
    assert dqn_atari.exploration_duration(args.exploration_steps, 2_000_000) == 200_000


def test_pqn_defaults_are_cleanrls():
    args = pqn_atari.Args()
    assert {name: getattr(args, name) for name in CLEANRL["pqn_atari_envpool.py"]} == CLEANRL["pqn_atari_envpool.py"]


def cleanrl_dir() -> Path | None:
    """CleanRL's cleanrl/ folder: in the checkout $CLEANRL_DIR names, else in ../shared/peers/cleanrl."""
    for root in filter(None, [os.environ.get("CLEANRL_DIR"), ROOT.parent / "shared" / "peers" / "cleanrl"]):
        if (Path(root) / "cleanrl").is_dir():
            return Path(root) / "cleanrl"
    return None


def args_defaults(source: str) -> list[tuple[str, object]]:
    """(name, default) of every field of the `Args` class in a script's source, in order; a default that is
    not a literal (CleanRL's exp_name, from __file__) as the text of its expression."""
    tree = ast.parse(source)
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args")
    fields = []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            try:
                fields.append((node.target.id, ast.literal_eval(node.value)))
            except ValueError:
                fields.append((node.target.id, ast.unparse(node.value)))
    return fields


@pytest.mark.parametrize("script", sorted(CLEANRL))
def test_the_table_is_cleanrls_own_files(script):
    folder = cleanrl_dir()
    if folder is None:
        pytest.skip("CleanRL's files are not here (set CLEANRL_DIR to a CleanRL checkout at fe8d8a0): "
                    "the hand-written table stands alone")
    fields = args_defaults((folder / script).read_text())
    names = [name for name, _ in fields]
    algorithm = dict(fields[names.index("env_id"):])  # CleanRL's "Algorithm specific arguments" start at env_id
    assert {name: algorithm[name] for name in CLEANRL[script]} == CLEANRL[script]
    # every setting of CleanRL's is compared or named as left out: a new one in CleanRL fails here
    assert set(algorithm) == set(CLEANRL[script]) | set(NOT_COMPARED[script])
