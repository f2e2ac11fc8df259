"""Self-describing checkpoints (model.load_hash_net) and `c3dhash export`: the exported program's codes are
the checkpoint's codes."""
import json

import numpy as np
import pytest
import torch

from c3dhash.cluster.cli import main
from c3dhash.cluster.config import config_to_dict, load_config, save_config
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.eval.codes import pack_bits
from c3dhash.eval.index.videos import product_data
from c3dhash.loaders.manifest import VideoRecord
from c3dhash.loaders.pipelines import build_eval_loader
from c3dhash.model import ModelError, load_hash_net
from c3dhash.model.load import _identity, fingerprint
from c3dhash.bench.tiny_retrieval import GEOMETRY, lsh_checkpoint, make_videos

pytestmark = pytest.mark.slow  # model encoding of real videos, end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = make_videos(root, classes=2, per_class=2)
    return root, paths, lsh_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", root, bits=24)


def test_the_checkpoint_describes_its_model(run, tmp_path):
    _, _, path = run
    m = load_hash_net(path)
    g = m.geometry
    assert (m.bits, m.backbone, g.num_frames, g.stride, g.resize, g.crop, g.clips_per_video) == \
        (24, "r3d_18", 4, 1, (32, 32), (32, 32), 2)
    assert not m.net.training and m.net.head.out_features == 24
    assert load_hash_net(path).fingerprint == m.fingerprint
    state = torch.load(path, weights_only=True)
    state["model"]["head.bias"] = state["model"]["head.bias"] + 1e-3
    torch.save(state, tmp_path / "changed.pt")
    assert load_hash_net(tmp_path / "changed.pt").fingerprint != m.fingerprint  # other weights, other model


def test_a_disagreeing_config_is_an_error_and_an_old_checkpoint_needs_one(run, tmp_path, capsys):
    root, paths, path = run
    agree = config_to_dict(load_config(None, [*GEOMETRY, "model.bits=24"]))
    assert load_hash_net(path, config=agree).bits == 24
    bad = config_to_dict(load_config(None, [*GEOMETRY, "model.bits=24", "data.num_frames=8"]))
    with pytest.raises(ModelError, match=r"data.num_frames=4 \(checkpoint\) vs 8 \(--config\)"):
        load_hash_net(path, config=bad)
    cfg = save_config(load_config(None, [*GEOMETRY, "model.bits=16"]), tmp_path / "c.yaml")
    out = tmp_path / "x.index"
    assert main(["index", "--checkpoint", str(path), "--config", str(cfg), "--videos", str(root),
                 "--out", str(out)]) == 2
    assert "model.bits=24 (checkpoint) vs 16 (--config)" in capsys.readouterr().err and not out.exists()
    state = torch.load(path, weights_only=True)
    ckpt.atomic_save({"model": state["model"], "config": {}}, tmp_path / "old.pt")
    with pytest.raises(ModelError, match="carries no config"):
        load_hash_net(tmp_path / "old.pt")
    assert load_hash_net(tmp_path / "old.pt", config=agree).fingerprint == load_hash_net(path).fingerprint


def test_mirror_views_are_part_of_the_model_and_older_checkpoints_keep_their_fingerprint(run, tmp_path):
    _, _, path = run
    m, state = load_hash_net(path), torch.load(path, weights_only=True)
    assert m.geometry.eval_flip is False
    identity = {k: v for k, v in _identity(state["config"], "x").items() if k != "data.eval_flip"}
    assert m.fingerprint == fingerprint(state["model"], identity)  # the fingerprint from before the key
    del state["config"]["data"]["eval_flip"]  # a checkpoint written before data.eval_flip existed
    ckpt.atomic_save(state, tmp_path / "before.pt")
    assert load_hash_net(tmp_path / "before.pt").fingerprint == m.fingerprint
    state["config"]["data"]["eval_flip"] = True
    ckpt.atomic_save(state, tmp_path / "mirror.pt")
    mirror = load_hash_net(tmp_path / "mirror.pt")
    assert mirror.geometry.eval_flip is True and mirror.fingerprint != m.fingerprint  # other codes, other model
    flipped = config_to_dict(load_config(None, [*GEOMETRY, "model.bits=24", "data.eval_flip=true"]))
    with pytest.raises(ModelError, match=r"data.eval_flip=False \(checkpoint\) vs True \(--config\)"):
        load_hash_net(path, config=flipped)


def test_exported_program_gives_the_checkpoints_codes(run, tmp_path, capsys):
    root, paths, path = run
    out = tmp_path / "hashnet.pt2"
    assert main(["export", "--checkpoint", str(path), "--out", str(out)]) == 0
    extra = {"c3dhash.json": ""}
    exported = torch.export.load(str(out), extra_files=extra).module()
    card = json.loads(extra["c3dhash.json"])
    m = load_hash_net(path)
    assert card["fingerprint"] == m.fingerprint and card["geometry"]["crop"] == [32, 32]
    records = [VideoRecord(p, 0, "") for p in paths]
    loader = build_eval_loader(records, root, product_data(m.geometry, device="cpu"), rank=0, world_size=1,
                               device_id=None)
    ours, theirs = [], []
    with torch.no_grad():
        for clips, _, index in loader:  # one video's clips per batch
            assert len(set(index.tolist())) == 1
            ours.append(m.net(clips).mean(0))
            theirs.append(exported(clips).mean(0))
    ours, theirs = torch.stack(ours), torch.stack(theirs)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert np.array_equal(pack_bits(theirs), pack_bits(ours)) and len(ours) == len(paths)
    assert exported(torch.zeros(5, 3, 4, 32, 32)).shape == (5, 24)  # any number of clips
