"""Training that has stopped learning says so (issue 33): SGD at lr 1e4 without the head's normalisation used
to end "done" with weights at 1.2e17 and one code for every test video. One plain process, no Ray."""
import dataclasses

import numpy as np
import pytest
import torch

from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.collapse import CollapseError, code_figures, collapse_problem
from c3dhash.eval.codes import pack_bits
from train_helpers import job, make_trainer


def test_code_figures():
    same = pack_bits(np.ones((12, 48), np.float32))
    fig = code_figures(same, 48)
    assert fig == {"count": 12, "distinct": 1, "top_share": 1.0, "bit_balance": 0.0}
    assert collapse_problem(fig) == "all 12 validation codes are identical (bit balance 0.000)"
    halves = pack_bits(np.repeat(np.eye(2, 48), 6, axis=0) * 2 - 1)  # two codes, 6 videos each
    fig = code_figures(halves, 48)
    assert (fig["distinct"], fig["top_share"]) == (2, 0.5) and fig["bit_balance"] == pytest.approx(2 / 48)
    assert collapse_problem(fig) is None  # two classes, one code each: a healthy (if tiny) model
    nearly = pack_bits(np.concatenate([np.ones((199, 8)), -np.ones((1, 8))]))
    assert collapse_problem(code_figures(nearly, 8)).startswith("100% of 200 validation codes are one code (2 distinct")


def test_a_diverging_run_stops_with_the_figures_and_keeps_no_best_model(tmp_path):
    tr, rows = make_trainer(job(lr=10000.0, schedule="constant"), tmp_path, rank=0, world=1)
    with pytest.raises(CollapseError) as exc:
        tr.fit()
    msg = str(exc.value)  # epoch 1 still learns (val mAP 0.79); by the end of epoch 2 a weight is at 4.4e6
    assert "epoch 2 (global step 6): training collapsed: weight 0.weight has L2 norm" in msg
    assert "> train.max_weight_norm=1e+06" in msg and "at lr 1e+04" in msg and "not kept as best.pt" in msg
    assert [r["epoch"] for r in rows] == [0]  # epoch 2 was neither reported nor checkpointed
    assert [p.name for p in tmp_path.glob("checkpoint_*")] == ["checkpoint_000003"]
    best = ckpt.load(tmp_path / ckpt.BEST_FILE)
    params = dict(tr.module.named_parameters())  # BatchNorm's running_var (a buffer) is huge already
    assert best["epoch"] == 0 and max(float(v.norm()) for k, v in best["model"].items() if k in params) < 1e6


def test_identical_validation_codes_stop_or_warn_and_are_never_best(tmp_path, capsys):
    for mode in ("stop", "warn"):
        tr, rows = make_trainer(job(epochs=1, collapse=mode, lr=1e-9), tmp_path / mode, rank=0, world=1)
        with torch.no_grad():  # every clip -> the same code: the hash layer ignores its input
            tr.module[5].weight.zero_()
            tr.module[5].bias.fill_(1.0)
        if mode == "stop":
            with pytest.raises(CollapseError, match=r"all 15 validation codes are identical \(bit balance 0\.000\)"):
                tr.fit()
        else:
            tr.fit()
            assert "warning: epoch 1 (global step 3): training collapsed: all 15 validation codes" in \
                capsys.readouterr().out
            assert rows[-1]["best_val_map"] == -1.0 and list((tmp_path / mode).glob("checkpoint_*"))
        assert not (tmp_path / mode / ckpt.BEST_FILE).exists()


def test_a_healthy_run_is_not_flagged(tmp_path):
    tr, rows = make_trainer(job(epochs=1), tmp_path, rank=0, world=1)
    tr.fit()
    assert (tmp_path / ckpt.BEST_FILE).exists() and rows[-1]["best_val_map"] > 0
    assert dataclasses.asdict(tr.job.train)["collapse"] == "stop"
