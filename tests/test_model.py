"""HashNet: shapes and range, local-only pretrained weights with clear errors, quantisation, per-video codes.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_model.py
"""
import ast
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchvision.models import video

from c3dhash import model
from c3dhash.model import ModelConfig, ModelError, WeightsError, build_from_config, build_hash_net, kinetics_norm

WEIGHT_FILE = "r3d_18-b3b3357e.pth"


@pytest.fixture(scope="module")
def clips():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def torchvision_state(tmp_path):
    """A torchvision r3d_18 state dict (random values, Kinetics layout incl. the 400-way fc) saved to disk."""
    torch.manual_seed(123)
    state = video.r3d_18(weights=None).state_dict()
    path = tmp_path / WEIGHT_FILE
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("bits", [1, 13, 64])
def test_forward_shape_range_and_features(bits, clips):
    torch.manual_seed(0)
    net = build_hash_net(bits=bits).eval()
    with torch.no_grad():
        h, f = net(clips), net.features(clips)
    assert h.shape == (2, bits) and f.shape == (2, 512)
    assert h.abs().max() <= 1.0
    assert_close(h, torch.tanh(net.head(f)))


def test_other_clip_sizes_and_channels_last():
    torch.manual_seed(0)
    net = build_hash_net(bits=8).eval()
    torch.manual_seed(0)
    net_cl = build_hash_net(bits=8, channels_last=True).eval()
    x = torch.randn(1, 3, 8, 56, 48)
    with torch.no_grad():
        assert_close(net_cl(x), net(x), rtol=1e-5, atol=1e-5)


def test_build_from_config_and_bad_settings(clips):
    net = build_from_config(ModelConfig(bits=5))
    assert net.head.out_features == 5
    with pytest.raises(ModelError, match="positive integer"):
        build_hash_net(bits=0)
    with pytest.raises(ModelError, match="r3d_18"):
        build_hash_net(bits=8, backbone="resnet50")
    with pytest.raises(ModelError, match=r"permute\(0, 4, 1, 2, 3\)"):
        net(clips.permute(0, 2, 3, 4, 1))


def test_local_weights_load_into_trunk(torchvision_state, monkeypatch):
    path, state = torchvision_state
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    net = build_hash_net(bits=16, weights=str(path))
    got = net.trunk.state_dict()
    assert "fc.weight" not in got  # the Kinetics classifier is dropped, the head is ours
    assert set(got) == {k for k in state if not k.startswith("fc.")}
    for k, v in got.items():
        assert torch.equal(v, state[k]), k


def test_a_c3dhash_checkpoint_gives_its_trunk_not_its_head(tmp_path):
    """model.weights=<a run's best.pt>: the trunk starts the new run (e.g. a labelled run's trunk for a
    self-supervised one); the head, of another code length here, starts fresh."""
    torch.manual_seed(0)
    donor = build_hash_net(bits=16)
    path = tmp_path / "best.pt"
    torch.save({"model": donor.state_dict(), "config": {"model": {"bits": 16}}, "epoch": 3}, path)
    net = build_hash_net(bits=8, weights=str(path))
    for k, v in net.trunk.state_dict().items():
        assert torch.equal(v, donor.trunk.state_dict()[k]), k
    headless = tmp_path / "headless.pt"
    torch.save({"model": {"head.weight": torch.zeros(8, 512)}, "epoch": 3}, headless)
    with pytest.raises(WeightsError, match=f"{headless}: a checkpoint without trunk"):
        build_hash_net(bits=8, weights=str(headless))


def test_kinetics400_alias_uses_torchvision_cache(torchvision_state, tmp_path, monkeypatch):
    path, state = torchvision_state
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    with pytest.raises(WeightsError) as err:
        build_hash_net(bits=8, weights="kinetics400")
    msg = str(err.value)
    assert str(hub / "checkpoints" / WEIGHT_FILE) in msg
    assert f"https://download.pytorch.org/models/{WEIGHT_FILE}" in msg and "model.weights=" in msg
    (hub / "checkpoints").mkdir(parents=True)
    path.rename(hub / "checkpoints" / WEIGHT_FILE)
    net = build_hash_net(bits=8, weights="kinetics400")
    assert torch.equal(net.trunk.stem[0].weight, state["stem.0.weight"])


def test_driver_preflight_and_the_model_share_one_weights_resolver(tmp_path, monkeypatch):
    """The driver refuses missing weights before Ray with the very message the model would give (and the
    kinetics400 alias is resolved by the same rule), so the two checks cannot drift apart."""
    from c3dhash.cluster import driver
    from c3dhash.cluster.config import load_config
    from c3dhash.loaders.manifest import VideoRecord, write_manifest

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    write_manifest(tmp_path / "data" / "manifests" / "split1" / "train.tsv", [VideoRecord("a/v.webm", 0, "a")])
    for weights in (str(tmp_path / "nope.pth"), "kinetics400"):
        cfg = load_config(None, [f"data.root={tmp_path / 'data'}", f"model.weights={weights}"])
        with pytest.raises(WeightsError) as from_model:
            build_hash_net(bits=8, weights=weights)
        with pytest.raises(WeightsError) as from_driver:
            driver.preflight(cfg)
        assert str(from_driver.value) == str(from_model.value)


def test_bad_weight_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=f"{missing}.*not found.*download.pytorch.org"):
        build_hash_net(bits=8, weights=str(missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=str(garbage)):
        build_hash_net(bits=8, weights=str(garbage))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match=f"{wrong}: not a r3d_18 state dict"):
        build_hash_net(bits=8, weights=str(wrong))
    code = tmp_path / "code.pth"
    torch.save({"x": Path("/")}, code)  # an arbitrary pickled object: weights_only must refuse it
    with pytest.raises(WeightsError, match=str(code)):
        build_hash_net(bits=8, weights=str(code))


def test_kinetics_norm_matches_torchvision_preset():
    preset = video.R3D_18_Weights.KINETICS400_V1.transforms()
    mean, std = kinetics_norm()
    assert list(mean) == list(preset.mean) and list(std) == list(preset.std)


def test_model_package_never_imports_ray_or_torch_distributed():
    for path in Path(model.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("ray", "torch.distributed")), f"{path}: imports {name}"


def _no_network(*args, **kwargs):
    raise AssertionError("the model must never download weights")
