"""model.head_norm: BatchNorm (no affine) between the hash layer and tanh, against the collapse the recipe
benchmark measured (README: Recipe robustness).

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_head_norm.py
"""
import pytest
import torch
from torch.testing import assert_close

from c3dhash.cluster.config import load_config
from c3dhash.distributed.syncbn import convert_sync_bn
from c3dhash.model import ModelConfig, build_from_config


def _net(head_norm: bool, *, shift: float) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_from_config(ModelConfig(bits=16, head_norm=head_norm))
    with torch.no_grad():
        net.head.bias += shift  # every clip pushed toward one corner: the collapsed state
    return net.train()


def test_a_common_offset_saturates_every_code_into_one_corner_without_the_norm_and_not_with_it():
    x = torch.randn(6, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = _net(False, shift=4.0)(x)
    assert bool((plain > 0.99).all())  # 6 identical saturated codes: all distances ~0, tanh' ~0
    normed = _net(True, shift=4.0)
    h = normed(x)
    z = torch.atanh(h.double().clamp(-1 + 1e-12, 1 - 1e-12))
    assert_close(z.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-4, rtol=0)  # per bit, over the batch
    var = z.var(0, unbiased=False)  # var / (var + eps): just below 1 for the tiny head of a random trunk
    assert bool(((var > 0.98) & (var < 1.0 + 1e-6)).all())
    assert bool(((h > 0).any(0) & (h < 0).any(0)).all())  # both signs of every bit in the batch


def test_eval_uses_running_statistics_and_the_state_round_trips():
    net = _net(True, shift=0.0)
    x = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    net(x)  # one train step's statistics
    assert int(net.head_norm.num_batches_tracked) == 1 and "head_norm.running_mean" in net.state_dict()
    other = build_from_config(ModelConfig(bits=16, head_norm=True))
    other.load_state_dict(net.state_dict())
    assert_close(other.eval()(x), net.eval()(x))
    assert not hasattr(build_from_config(ModelConfig(bits=16)), "head_norm") or \
        build_from_config(ModelConfig(bits=16)).head_norm is None


def test_sync_bn_conversion_covers_the_head_norm_and_the_config_key_loads():
    net = convert_sync_bn(_net(True, shift=0.0))
    assert type(net.head_norm).__name__ == "GatherSyncBatchNorm" and not net.head_norm.affine
    x = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    assert net(x).shape == (4, 16)  # world size 1: plain BatchNorm on N x bits
    assert load_config(None, ["model.head_norm=true"]).model.head_norm is True


def test_a_resume_that_toggles_the_head_norm_is_refused_before_anything_loads():
    from c3dhash.distributed.job import config_to_dict
    from c3dhash.distributed.resume import ResumeConfigError, check_resume
    saved = config_to_dict(load_config(None, []))
    current = config_to_dict(load_config(None, ["model.head_norm=true"]))
    with pytest.raises(ResumeConfigError, match="model.head_norm"):
        check_resume(saved, current, where="ckpt.pt")
