"""PR curves from true per-radius counts: brute-force counts, `c3dhash eval --plots/--tensorboard`, and
TensorBoard's PR-curve page in headless Chromium drawing one point per radius that retrieves something."""
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browser import colour_blobs, needs_chromium, screenshot
from c3dhash.cluster.cli import main
from c3dhash.cluster.serve.app import free_port
from c3dhash.distributed.tensorboard import RankZeroWriter
from c3dhash.eval.codes import Codes, pack_bits, save_codes, unpack_bits
from c3dhash.eval.metrics.curves import pr_counts
from c3dhash.eval.metrics.exact import evaluate

BITS = 16
RUN_COLOUR = (255, 112, 67)  # TensorBoard's colour of the first run


def radii_with_retrieved(counts: dict) -> int:
    """How many radii retrieve something (TP + FP > 0): the points TensorBoard draws."""
    return int(sum(1 for t, f in zip(counts["tp"], counts["fp"]) if t + f > 0))


def codes_pair(seed: int = 0) -> tuple[Codes, Codes]:
    """4 classes around random centres; queries are noisier copies, so small radii retrieve nothing."""
    rng = np.random.default_rng(seed)
    centres = rng.random((4, BITS)) < 0.5
    lab = np.repeat(np.arange(4), 10)
    db = centres[lab] ^ (rng.random((40, BITS)) < 0.12)
    qlab = np.arange(8) % 4
    q = centres[qlab] ^ (rng.random((8, BITS)) < 0.3)
    q[:, :3] = ~centres[qlab][:, :3]  # at least 3 bits from every centre: radius 0 retrieves nothing
    return (Codes(codes=pack_bits(q), bits=BITS, labels=qlab, ids=[f"q{i}" for i in range(8)]),
            Codes(codes=pack_bits(db), bits=BITS, labels=lab, ids=[f"d{i}" for i in range(40)]))


def test_counts_equal_brute_force():
    q, db = codes_pair()
    c = pr_counts(evaluate(q, db))
    qb, dbb = unpack_bits(q.codes, BITS).astype(int), unpack_bits(db.codes, BITS).astype(int)
    d = np.abs(qb[:, None, :] - dbb[None, :, :]).sum(2)
    same = q.labels[:, None] == db.labels[None, :]
    for r in range(BITS + 1):
        tp, fp = int(((d <= r) & same).sum()), int(((d <= r) & ~same).sum())
        assert (c["tp"][r], c["fp"][r], c["fn"][r], c["tn"][r]) == (tp, fp, int(same.sum()) - tp,
                                                                    int((~same).sum()) - fp)
        assert c["precision"][r] == (tp / (tp + fp) if tp + fp else 0.0)
    assert c["same"] == np.bincount(d[same], minlength=BITS + 1).tolist()
    assert 2 < radii_with_retrieved(c) < BITS + 1 and c["tp"][0] + c["fp"][0] == 0


def test_eval_writes_the_plots_and_tensorboard_events(tmp_path, capsys):
    q, db = codes_pair()
    save_codes(tmp_path / "q.npz", q)
    save_codes(tmp_path / "d.npz", db)
    assert main(["eval", "--query", str(tmp_path / "q.npz"), "--db", str(tmp_path / "d.npz"),
                 "--plots", str(tmp_path / "eval.png"), "--tensorboard", str(tmp_path / "run")]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "eval.png").size == (1000, 400)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    (event,) = acc.Tensors("eval/pr_hamming_radius")
    from tensorboard.util.tensor_util import make_ndarray
    data = make_ndarray(event.tensor_proto)
    assert data.shape == (6, BITS + 1)
    c = pr_counts(evaluate(q, db))
    assert data[0].tolist() == c["tp"][::-1] and data[1].tolist() == c["fp"][::-1]  # radius bits first
    assert "eval/hamming_distance/same_label" in acc.Tags()["histograms"]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def tensorboard(tmp_path):
    q, db = codes_pair()
    counts = pr_counts(evaluate(q, db))
    tb = RankZeroWriter(tmp_path / "tb", rank=0)
    tb.pr_curve("val/pr_hamming_radius", counts, 3)
    tb.close()
    port = free_port()
    exe = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen([str(exe), "--logdir", str(tmp_path / "tb"), "--port", str(port), "--host",
                             "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if _get(f"{url}/data/plugin/pr_curves/tags"):
                    break
            except OSError:
                time.sleep(0.5)
        yield url, counts
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@needs_chromium
def test_tensorboard_draws_one_point_per_radius_that_retrieves(tensorboard, tmp_path):
    url, counts = tensorboard
    (entry,) = _get(f"{url}/data/plugin/pr_curves/pr_curves?run=.&tag=val/pr_hamming_radius")["."]
    want = radii_with_retrieved(counts)
    assert len(entry["precision"]) == len(entry["recall"]) == want  # TensorBoard trimmed exactly the empty radii
    keep = [r for r in range(BITS, -1, -1) if counts["tp"][r] + counts["fp"][r] > 0]
    np.testing.assert_allclose(entry["recall"], [counts["recall"][r] for r in keep], rtol=1e-6)
    shot = screenshot(f"{url}/#pr_curves", tmp_path / "tb.png", size=(1400, 1000), wait_ms=15000)
    (_, x0, y0, x1, y1), *_ = colour_blobs(shot, RUN_COLOUR, tol=10)
    # the curve is one connected line spanning the recall and precision ranges, not a single dot
    span_r = max(entry["recall"]) - min(entry["recall"])
    span_p = max(entry["precision"]) - min(entry["precision"])
    assert span_r > 0.3 and span_p > 0.1
    assert x1 - x0 > 100 * span_r and y1 - y0 > 100 * span_p, (x0, y0, x1, y1)


def test_training_validation_writes_the_true_counts(tmp_path):
    """The Trainer (one plain process, tiny tensors) writes val/pr_hamming_radius with the counts of its own
    validation codes, not zeros."""
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    from c3dhash.distributed.config import LossConfig, TrainConfig
    from c3dhash.distributed.job import ClusterConfig, JobConfig
    from c3dhash.distributed.trainer import Trainer
    from c3dhash.model.config import ModelConfig
    from train_helpers import TensorTrainLoader, tensor_eval_set, tensor_videos, tiny_net
    x, labels = tensor_videos(3, 4)
    qx, qlabels = tensor_videos(3, 1, seed=1)
    job = JobConfig(model=ModelConfig(bits=8), loss=LossConfig(margin=8.0), cluster=ClusterConfig(name="pr"),
                    train=TrainConfig(epochs=1, steps_per_epoch=2, optimizer="sgd", lr=0.05, eval_every=1,
                                      log_every=100, amp="off", seed=0))
    tr = Trainer(job=job, model=tiny_net(8), device=torch.device("cpu"),
                 train_loader=TensorTrainLoader(x, labels, p=2, k=2, steps=2, rank=0, world=1),
                 queries=tensor_eval_set(qx, qlabels, rank=0, world=1, batch_size=2),
                 database=tensor_eval_set(x, labels, rank=0, world=1, batch_size=2), run_dir=tmp_path)
    tr.fit()
    want = pr_counts(evaluate(tr.encode(tr.queries), tr.encode(tr.database)))
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    (event,) = acc.Tensors("val/pr_hamming_radius")
    data = make_ndarray(event.tensor_proto)
    assert data[0].tolist() == want["tp"][::-1] and data[1].tolist() == want["fp"][::-1]
    assert data[0].max() == 3 * 4 and data[:2].sum() > 0  # every same-label pair is retrieved at radius bits
