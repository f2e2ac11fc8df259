"""Encoding a split: per-video mean of clip outputs; rank shards together equal the single-process codes;
`c3dhash encode` writes the same codes file from a checkpoint."""
import json

import numpy as np
import pytest
import torch

from c3dhash.cluster.cli import main
from c3dhash.cluster.config import config_to_dict, load_config, save_config
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.eval.codes import load_codes, pack_bits
from c3dhash.eval.index.encode import encode_loader, to_codes
from c3dhash.loaders.pipelines import build_eval_loader
from c3dhash.loaders.splits import load_split
from c3dhash.model.hashnet import build_hash_net
from train_helpers import make_tiny_dataset, tiny_overrides

pytestmark = pytest.mark.slow  # model encoding of real videos, end to end


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_tiny_dataset(tmp_path_factory.mktemp("synth"))
    storage = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, [*tiny_overrides(root, storage, "enc", workers=1), "data.clips_per_video=2"])
    torch.manual_seed(0)
    net = build_hash_net(bits=cfg.model.bits).eval()
    return cfg, net, load_split(cfg.data, "test")


def encode(cfg, net, records, *, rank, world):
    loader = build_eval_loader(records, cfg.data.root, cfg.data, rank=rank, world_size=world, device_id=None)
    return encode_loader(net, loader, device=torch.device("cpu"), amp="off")


def test_video_output_is_the_mean_of_its_clips(setup):
    cfg, net, records = setup
    loader = build_eval_loader(records, cfg.data.root, cfg.data, rank=0, world_size=1, device_id=None)
    sums, counts = {}, {}
    with torch.no_grad():
        for clips, _, index in loader:
            for row, v in zip(net(clips), index.tolist()):
                sums[v] = sums.get(v, 0) + row
                counts[v] = counts.get(v, 0) + 1
    index, outputs = encode(cfg, net, records, rank=0, world=1)
    assert index.tolist() == list(range(len(records))) and set(counts.values()) == {2}
    expected = torch.stack([sums[v] / counts[v] for v in index.tolist()])
    torch.testing.assert_close(torch.from_numpy(outputs), expected.float())


def test_two_rank_shards_give_the_single_process_codes(setup):
    cfg, net, records = setup
    full = to_codes(*encode(cfg, net, records, rank=0, world=1), records, cfg.model.bits)
    parts = [encode(cfg, net, records, rank=r, world=2) for r in (0, 1)]
    assert not set(parts[0][0]) & set(parts[1][0])  # disjoint shards
    index = np.concatenate([p[0] for p in parts])
    outputs = np.concatenate([p[1] for p in parts])
    sharded = to_codes(index, outputs, records, cfg.model.bits)
    assert np.array_equal(sharded.codes, full.codes) and np.array_equal(sharded.labels, full.labels)
    assert sharded.ids.tolist() == [r.path for r in records]


def test_duplicate_videos_are_refused_and_missing_ones_warned(setup):
    cfg, net, records = setup
    index, outputs = encode(cfg, net, records, rank=0, world=1)
    with pytest.raises(ValueError, match="exactly once"):
        to_codes(np.concatenate([index, index[:1]]), np.concatenate([outputs, outputs[:1]]), records, 16)
    with pytest.warns(UserWarning, match="1 of"):
        codes = to_codes(index[1:], outputs[1:], records, 16)
    assert codes.ids.tolist() == [r.path for r in records[1:]]


def test_encode_cli_writes_the_codes_of_the_checkpoint(setup, tmp_path, capsys):
    cfg, net, records = setup
    overrides = [*tiny_overrides(cfg.data.root, tmp_path / "runs", "enc", workers=1), "data.clips_per_video=2"]
    config = save_config(load_config(None, overrides), tmp_path / "enc.yaml")
    ckpt.atomic_save({"model": net.state_dict(), "config": {}, "epoch": 0, "val_map": 0.0},
                     tmp_path / "runs" / "enc" / ckpt.BEST_FILE)
    out = tmp_path / "test.npz"
    args = ["encode", "--config", str(config), "--checkpoint", "best", "--split", "test"]
    assert main([*args, "--out", str(out)]) == 0
    codes = load_codes(out)
    _, outputs = encode(cfg, net, records, rank=0, world=1)
    assert np.array_equal(codes.codes, pack_bits(outputs)) and codes.bits == 16
    assert main([*args, "--out", str(tmp_path / "x.npz"), "--set", "cluster.name=none"]) == 2
    assert "no 'best' checkpoint" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()
    # a checkpoint that carries its config (as training writes them) needs no --config
    full = ckpt.atomic_save({"model": net.state_dict(), "config": config_to_dict(load_config(None, overrides))},
                            tmp_path / "full.pt")
    alone = tmp_path / "alone.npz"
    assert main(["encode", "--checkpoint", str(full), "--split", "test", "--out", str(alone)]) == 0
    assert np.array_equal(load_codes(alone).codes, codes.codes) and load_codes(alone).ids.tolist() == \
        codes.ids.tolist()
    assert main(["encode", "--checkpoint", "best", "--split", "test", "--out", str(tmp_path / "y.npz")]) == 2
    assert "needs --config" in capsys.readouterr().err


def test_eval_checkpoint_equals_encode_twice_then_eval(setup, tmp_path, capsys):
    """`eval --checkpoint CK` = `encode --split test` + `encode --split train` + `eval --query --db`."""
    cfg, net, _ = setup
    overrides = [*tiny_overrides(cfg.data.root, tmp_path / "runs", "enc", workers=1), "data.clips_per_video=2"]
    full = ckpt.atomic_save({"model": net.state_dict(), "config": config_to_dict(load_config(None, overrides))},
                            tmp_path / "full.pt")
    for split in ("test", "train"):
        assert main(["encode", "--checkpoint", str(full), "--split", split, "-o", str(tmp_path / f"{split}.npz")]) == 0
    assert main(["eval", "-q", str(tmp_path / "test.npz"), "--db", str(tmp_path / "train.npz"),
                 "-j", str(tmp_path / "two.json")]) == 0
    assert main(["eval", "--checkpoint", str(full), "-j", str(tmp_path / "one.json")]) == 0
    two, one = (json.loads((tmp_path / f).read_text()) for f in ("two.json", "one.json"))
    assert one == two and one["num_queries"] == len(load_codes(tmp_path / "test.npz"))
    assert main(["eval", "--checkpoint", str(full), "--db", str(tmp_path / "train.npz")]) == 2
    assert "drop --query/--db" in capsys.readouterr().err


def test_stale_scratch_of_a_dead_encoder_is_removed_and_live_or_recent_ones_kept(tmp_path):
    import os
    import subprocess
    import sys
    from c3dhash.eval.index.videos import SCRATCH_PREFIX, STALE_SCRATCH_S, remove_stale_scratch
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a process that has exited
    old = os.stat(tmp_path).st_mtime - 2 * STALE_SCRATCH_S
    names = {"dead-old": f"{SCRATCH_PREFIX}{dead}-a", "dead-recent": f"{SCRATCH_PREFIX}{dead}-b",
             "live-old": f"{SCRATCH_PREFIX}{os.getpid()}-c", "not-ours": "c3dhash-other-1-d"}
    for key, name in names.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.webm").write_bytes(b"x")
        if key != "dead-recent":
            os.utime(tmp_path / name, (old, old))
    assert remove_stale_scratch(str(tmp_path)) == [tmp_path / names["dead-old"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "dead-old")
