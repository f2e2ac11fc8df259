"""Per-radius counts for PR curves, Hamming-distance histograms of same- and different-label pairs, and a PNG.

    c3dhash eval --query test.npz --db train.npz --plots runs/eval.png [--tensorboard runs/synth-cpu]

    metrics = evaluate(query, db)        # eval/metrics/exact.py: its "pair_hist" holds the pooled pair counts
    counts = pr_counts(metrics)          # dict: radius, tp, fp, tn, fn, precision, recall, same, diff
    write_plots("eval.png", counts, metrics["pr_curve"])

Over all (query, database item) pairs, at radius r the items within distance r are retrieved: TP = same-label
pairs within r, FP = different-label pairs within r, FN / TN the same-label / different-label pairs beyond r;
precision = TP / (TP + FP) (0 when nothing is retrieved) and recall = TP / (TP + FN), pooled over pairs (what
TensorBoard's PR plugin computes from counts). eval/metrics/exact.py's `pr_curve` is the mean over queries instead;
the PNG shows both. The pair counts are the per-query histograms of the metric scan summed (no second scan).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from c3dhash.eval.codes import CodesError
from c3dhash.loaders.atomic import atomic_write


def pr_counts(metrics: dict[str, Any]) -> dict[str, Any]:
    """TP/FP/TN/FN and pooled precision/recall at every radius 0..bits (lists, JSON- and Ray-friendly) from the
    metrics of evaluate / evaluate_sharded (their "pair_hist")."""
    if "pair_hist" not in metrics:
        raise CodesError("pr_counts: the metrics lack 'pair_hist'; pass the dict evaluate() returns")
    same, diff = np.asarray(metrics["pair_hist"]["same"], np.int64), np.asarray(metrics["pair_hist"]["diff"], np.int64)
    tp, fp = np.cumsum(same), np.cumsum(diff)
    fn, tn = same.sum() - tp, diff.sum() - fp
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    return {"radius": list(range(len(same))), "tp": tp.tolist(), "fp": fp.tolist(), "tn": tn.tolist(),
            "fn": fn.tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
            "same": same.tolist(), "diff": diff.tolist()}


def plot_figure(counts: dict[str, Any], mean_pr: dict[str, Any] | None = None, *, title: str = ""):
    import matplotlib
    matplotlib.use("Agg")  # files only: never a display
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4), dpi=100)
    ax, hx = fig.subplots(1, 2)
    keep = [i for i, (t, f) in enumerate(zip(counts["tp"], counts["fp"])) if t + f > 0]
    ax.plot([counts["recall"][i] for i in keep], [counts["precision"][i] for i in keep], "o-", ms=3,
            label="pooled over pairs (TensorBoard)")
    if mean_pr is not None:
        ax.plot(mean_pr["recall"], mean_pr["precision"], "s--", ms=3, label="mean over queries (c3dhash eval)")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title="PR over Hamming radius 0..bits")
    ax.legend(loc="lower left", fontsize=8)
    r = np.asarray(counts["radius"])
    same, diff = np.asarray(counts["same"], float), np.asarray(counts["diff"], float)
    hx.bar(r - 0.2, same / max(1.0, same.sum()), width=0.4, color="tab:green", label="same label")
    hx.bar(r + 0.2, diff / max(1.0, diff.sum()), width=0.4, color="tab:red", label="different label")
    hx.set(xlabel="Hamming distance", ylabel="fraction of pairs", title="distance histograms")
    hx.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_plots(path: str | Path, counts: dict[str, Any], mean_pr: dict[str, Any] | None = None, *,
                title: str = "") -> Path:
    fig = plot_figure(counts, mean_pr, title=title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))
