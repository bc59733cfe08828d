"""benchmark/dqn_speed.py: the arithmetic count behind its GFLOP/s figure."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmark"))

import dqn_speed  # noqa: E402


def test_update_flops_counted_by_hand():
    # Multiply-adds per sample of the Nature CNN on 4x84x84 input (Mnih et al. 2015):
    # output positions x (input channels x kernel area) for each conv, in x out for each linear layer.
    conv1 = 20 * 20 * 32 * (4 * 8 * 8)
    conv2 = 9 * 9 * 64 * (32 * 4 * 4)
    conv3 = 7 * 7 * 64 * (64 * 3 * 3)
    fc1, fc2 = 3136 * 512, 512 * 6
    forward = conv1 + conv2 + conv3 + fc1 + fc2
    # target forward + online forward + backward (weight gradients everywhere, input gradients except conv1)
    per_sample = forward + forward + (forward + forward - conv1)
    assert dqn_speed.update_flops(batch=32, num_actions=6) == 2 * 32 * per_sample
    assert dqn_speed.update_flops(batch=1, num_actions=6) * 32 == dqn_speed.update_flops(batch=32, num_actions=6)
