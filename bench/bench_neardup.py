"""Near-duplicate retrieval: does a copy of a video find its original first? Supervised, self-supervised, LSH.

    c3dhash bench neardup                                          # train both on the synthetic set, then measure
    c3dhash bench neardup -- --epochs 12 --ssl-epochs 12           # shorter
    c3dhash bench neardup -- --supervised runs/a/best.pt --ssl runs/b/best.pt --root data/synth   # no training
    c3dhash bench neardup -- --ssl-set loss.margin=28 --copies 3   # a variant of the self-supervised recipe
    c3dhash bench neardup -- --ssl-train library                   # self-supervised on train + the originals

Copies (loaders/neardup.py): every test video trimmed, cropped, rescaled, flipped in half the cases and
re-encoded (VP9 -> MJPEG, else -> VP9). Queries = the copies; database = the test originals plus every train
video as distractors (relevant: the copy's own original only, so mAP@all is the mean reciprocal rank and P@1
is recall@1; Hamming ties broken by database index, the project's rule); "mirrored queries": recall@1 when each
copy is also searched mirrored (`search --video --mirrored`, eval/index/query.rank_nearer). Class mAP@all is the
demo's figure (test queries vs the train database, class labels), which the self-supervised model never saw in
training.

Methods: the supervised recipe (configs/synth-cpu.yaml), the self-supervised one (configs/library-cpu.yaml:
data.sampler=video, P videos x K clips, positives = clips of the same video; each clip and its mirror at
evaluation), and two LSH baselines at the supervised config's bits and clips: a seeded Gaussian projection of
untrained r3d_18 features (the demo's) and of the raw clip pixels, both centred on the database mean. Training
runs in this process through distributed/trainer.py (one torch thread per process, as bench/bench_recipe.py).
`--ssl-set model.weights=FILE` starts the self-supervised run from a trunk (Kinetics, or a labelled run's
best.pt) and adds LSH over that trunk's features, the baseline such a start has to beat.
`--copies N` makes N copies of each test video (N x the queries: one query of 48 moves recall@1 by 0.021).
`--ssl-train library` trains the self-supervised model on the train videos and the test originals (it reads no
label): a library's model is trained on the library, then new uploads are searched; the default keeps the
originals unseen, as for the supervised model. The copies are never trained on.
Writes bench/results/neardup-<cpu>-<date>.md with the load average at the start and end of every part (the
machine may be shared: minutes depend on the load).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from c3dhash.cluster.config import load_config
from c3dhash.cluster.demo import Features
from c3dhash.distributed import checkpoint as ckpt
from c3dhash.distributed.build import build_data, build_model
from c3dhash.distributed.job import JobConfig
from c3dhash.distributed.trainer import Trainer
from c3dhash.eval.codes import Codes
from c3dhash.eval.index.encode import encode_loader, to_codes
from c3dhash.eval.index.query import rank_nearer
from c3dhash.eval.index.videos import Mirrored
from c3dhash.eval.metrics.exact import evaluate
from c3dhash.loaders.atomic import atomic_write_text
from c3dhash.loaders.manifest import VideoRecord, write_manifest
from c3dhash.loaders.neardup import make_copies
from c3dhash.loaders.pipelines import build_eval_loader
from c3dhash.loaders.splits import build_splits_for, load_split, manifest_path
from c3dhash.loaders.synth import make_synth_dataset
from c3dhash.model.hashnet import build_from_config
from c3dhash.model.load import load_hash_net
from c3dhash.bench.results import cpu, default_folder

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synth-cpu.yaml"
SSL_CONFIG = ROOT / "configs" / "library-cpu.yaml"


@dataclass(frozen=True)
class Setup:
    config: str = str(CONFIG)
    ssl_config: str = str(SSL_CONFIG)
    root: str = ""  # "" = generate a synthetic set under <work>/data
    classes: int = 8
    per_class: int = 48
    epochs: int = 0  # 0 = the config's
    ssl_epochs: int = 0  # 0 = the self-supervised config's
    overrides: tuple[str, ...] = ()
    ssl_overrides: tuple[str, ...] = ()
    supervised: str = ""  # a best.pt to use instead of training
    ssl: str = ""
    seed: int = 0
    copies: int = 1  # copies per test video (each drawn with its own seed): more queries, less noise
    # what the self-supervised model trains on: "train" (the test originals unseen, as the supervised model) or
    # "library" (train + the test originals, no labels: a library trains on itself, then uploads are searched)
    ssl_train: str = "train"
    work: str = "runs/bench_neardup"
    out: str = ""  # "" = bench/results.py default_folder()


def load() -> float:
    return os.getloadavg()[0]


def job_config(setup: Setup, name: str, root: Path, extra: tuple[str, ...], epochs: int, *,
               config: str = "") -> JobConfig:
    base = [f"data.root={root}", "cluster.num_workers=1", f"cluster.name={name}",
            f"cluster.storage_path={Path(setup.work) / 'runs'}", "train.checkpoint_every=1000",
            f"train.seed={setup.seed}", f"data.seed={setup.seed}"]
    if epochs:
        base += [f"train.epochs={epochs}", f"train.eval_every={max(1, -(-epochs // 2))}"]
    config = config or setup.config
    cfg = load_config(config, [*base, *extra, *setup.overrides])
    if cfg.data.sampler == "pk" and cfg.data.pk_classes > setup.classes:
        cfg = load_config(config, [*base, f"data.pk_classes={setup.classes}", *extra, *setup.overrides])
    return cfg


def train(job: JobConfig, given: str) -> tuple[torch.nn.Module, JobConfig, str]:
    """The best-validation model of a fresh run, or the checkpoint `given` (any c3dhash model, a combined one
    included) with the job's bits and clip geometry replaced by its own; the job; a line saying which."""
    if given:
        m = load_hash_net(given)
        job = dataclasses.replace(job, data=dataclasses.replace(job.data, **dataclasses.asdict(m.geometry)),
                                  model=dataclasses.replace(job.model, bits=m.bits))
        return m.net, job, f"checkpoint {given} ({m.bits} bits)"
    net = build_model(job, torch.device("cpu"))
    t0, l0 = time.time(), load()
    train_loader, queries, database = build_data(job, torch.device("cpu"))
    run = Path(job.cluster.storage_path) / job.cluster.name
    Trainer(job=job, model=net, device=torch.device("cpu"), train_loader=train_loader, queries=queries,
            database=database, run_dir=run).fit()
    net.load_state_dict(ckpt.load(run / ckpt.BEST_FILE)["model"])
    return net, job, (f"trained {job.train.epochs} epochs in {(time.time() - t0) / 60:.1f} min "
                      f"(load {l0:.1f} -> {load():.1f})")


def outputs(net: torch.nn.Module, job: JobConfig, records: list[VideoRecord], root: str) -> np.ndarray:
    """Per-video mean outputs [n, D] in records order (eval clips of the job's geometry)."""
    loader = build_eval_loader(records, root, job.data, rank=0, world_size=1, device_id=None)
    index, out = encode_loader(net, loader, device=torch.device("cpu"), amp="off")
    if len(index) != len(records):
        raise RuntimeError(f"{len(records) - len(index)} of {len(records)} videos failed to decode")
    return out[np.argsort(index)]


@dataclass(frozen=True)
class Sets:
    test: list[VideoRecord]
    train: list[VideoRecord]
    copies: list[VideoRecord]  # absolute paths; label = the index of the original in `test`
    flipped: np.ndarray  # bool per copy
    root: str


def prepare(setup: Setup, job: JobConfig) -> Sets:
    root = Path(job.data.root)
    test, train_recs = load_split(job.data, "test"), load_split(job.data, "train")
    copies, flips = [], []
    for j in range(setup.copies):  # the first set keeps the folder and seed of a single-copy run
        out = Path(setup.work) / "copies" / (root.name if j == 0 else f"{root.name}-{j}")
        specs = make_copies(test, root, out, seed=setup.seed + 1000 * j, workers=max(1, (os.cpu_count() or 2) // 2))
        copies += [VideoRecord(str(Path(p).resolve()), i, test[i].class_name) for i, (p, _) in enumerate(specs)]
        flips += [s.flip for _, s in specs]
    return Sets(test, train_recs, copies, np.array(flips), str(root))


def scores(feats: dict[str, np.ndarray], s: Sets, bits: int, project: np.ndarray | None) -> dict[str, float]:
    """Near-duplicate mAP / recall@1 (also on the flipped copies alone) and class mAP@all."""
    mean = np.concatenate([feats["test"], feats["train"]]).mean(0, keepdims=True) if project is not None else 0.0

    def codes(name: str, records: list[VideoRecord], labels) -> Codes:
        f = feats[name] if project is None else (feats[name] - mean) @ project
        recs = [dataclasses.replace(r, label=int(lab)) for r, lab in zip(records, labels)]
        return to_codes(np.arange(len(recs)), f, recs, bits)

    feats = {**feats, "db": np.concatenate([feats["test"], feats["train"]])}
    n_test = len(s.test)
    db = codes("db", s.test + s.train, range(n_test + len(s.train)))
    q = codes("copies", s.copies, [c.label for c in s.copies])
    near = evaluate(q, db, precision_at_k=(1, 10))
    # `search --video --mirrored`: each copy also searched mirrored, an original at the nearer distance
    qm = codes("copies_mirror", s.copies, [c.label for c in s.copies])
    first, _ = rank_nearer(SimpleNamespace(codes=db.codes, bits=bits), q.codes, qm.codes, 1)
    flipped = evaluate(Codes(q.codes[s.flipped], bits, q.labels[s.flipped], q.ids[s.flipped]), db,
                       precision_at_k=(1,))
    cls = evaluate(codes("test", s.test, [r.label for r in s.test]),
                   codes("train", s.train, [r.label for r in s.train]))
    return {"near_map": near["map_all"], "near_r1": near["precision_at_k"][1],
            "flip_r1": flipped["precision_at_k"][1], "class_map": cls["map_all"],
            "mirrored_r1": float(np.mean(first[:, 0] == q.labels))}


def method_features(net: torch.nn.Module, job: JobConfig, s: Sets) -> dict[str, np.ndarray]:
    return {"test": outputs(net, job, s.test, s.root), "train": outputs(net, job, s.train, s.root),
            "copies": outputs(net, job, s.copies, "/"), "copies_mirror": outputs(Mirrored(net), job, s.copies, "/")}


def trunk_features(job: JobConfig, s: Sets, *, weights: str | None) -> dict[str, np.ndarray]:
    """The pooled r3d_18 features (no hash head) of a trunk built with `weights` (None: a seeded random init)."""
    return method_features(Features(build_from_config(dataclasses.replace(job.model, weights=weights))), job, s)


def run(setup: Setup) -> list[str]:
    t0, l0 = time.time(), load()
    root = Path(setup.root) if setup.root else Path(setup.work) / "data" / f"c{setup.classes}-n{setup.per_class}"
    if not setup.root and not (root / "ucfTrainTestlist").is_dir():
        make_synth_dataset(root, classes=setup.classes, per_class=setup.per_class, seed=setup.seed, progress=False)
    sup_job = job_config(setup, "neardup-sup", root, (), setup.epochs)
    if not manifest_path(sup_job.data, "train").is_file():
        build_splits_for(sup_job.data)
    library = ((f"data.manifest_dir={library_manifests(setup, sup_job)}",) if setup.ssl_train == "library" else ())
    ssl_job = job_config(setup, "neardup-ssl", root, (f"data.dataset={sup_job.data.dataset}", *library,
                                                      *setup.ssl_overrides), setup.ssl_epochs, config=setup.ssl_config)
    sets, bits = prepare(setup, sup_job), sup_job.model.bits
    rows, notes = {}, {}
    for name, job, given in (("supervised", sup_job, setup.supervised), ("self-supervised", ssl_job, setup.ssl)):
        torch.manual_seed(setup.seed)
        net, job, notes[name] = train(job, given)
        rows[name] = scores(method_features(net, job, sets), sets, job.model.bits, None)
    torch.manual_seed(setup.seed)
    feats = trunk_features(sup_job, sets, weights=None)
    rng = np.random.default_rng(setup.seed)
    proj = rng.standard_normal((feats["test"].shape[1], bits))
    rows["LSH, untrained r3d_18 features"] = scores(feats, sets, bits, proj)
    pixels = method_features(torch.nn.Flatten(), sup_job, sets)
    rows["LSH, pixels"] = scores(pixels, sets, bits, rng.standard_normal((pixels["test"].shape[1], bits)))
    if ssl_job.model.weights:  # a pretrained start: the fair baseline is LSH over the features it starts from
        init = trunk_features(sup_job, sets, weights=ssl_job.model.weights)
        rows["LSH, the self-supervised run's initial features"] = scores(init, sets, bits, proj)
    return report(setup, sets, rows, notes, bits, minutes=(time.time() - t0) / 60, loads=(l0, load()))


def library_manifests(setup: Setup, job: JobConfig) -> Path:
    """Manifests whose train split is train + test (labels are never read by the video sampler): the copies'
    originals are part of what the library model trained on; validation stays held out."""
    out = Path(setup.work).absolute() / "ssl-library-manifests"
    train, test = load_split(job.data, "train"), load_split(job.data, "test")
    write_manifest(out / "train.tsv", train + test)
    write_manifest(out / "val.tsv", load_split(job.data, "val"))
    write_manifest(out / "test.tsv", test)
    return out


def cpu_name() -> str:
    return cpu()[0]  # bench/results.py: /proc/cpuinfo's model name, or the platform's


def report(setup: Setup, s: Sets, rows: dict, notes: dict, bits: int, *, minutes: float, loads) -> list[str]:
    classes = len({r.label for r in s.train})
    lines = [f"# Near-duplicate retrieval ({datetime.date.today()})", "",
             f"{cpu_name()}, {os.cpu_count()} cores, load average {loads[0]:.1f} -> {loads[1]:.1f} (1 min; a shared "
             f"machine), {minutes:.1f} min in all.", "",
             f"Data: {s.root} ({classes} classes), {len(s.copies)} copies of the test videos ({setup.copies} each) "
             f"({int(s.flipped.sum())} flipped) against {len(s.test)} originals + {len(s.train)} train distractors; "
             f"{bits} bits. Chance class mAP ~ {1 / max(1, classes):.3f}.", "",
             "| method | near-dup mAP | recall@1 | recall@1 flipped | recall@1, mirrored queries | class mAP@all |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['near_map']:.4f} | {r['near_r1']:.4f} | {r['flip_r1']:.4f} | "
                     f"{r['mirrored_r1']:.4f} | {r['class_map']:.4f} |")
    recipe = ([] if setup.ssl else  # a given checkpoint says how it was trained in its own config
              [f"- self-supervised: {setup.ssl_config} + {' '.join(setup.ssl_overrides) or 'no overrides'}; trained "
               f"on {'train + the test originals (library)' if setup.ssl_train == 'library' else 'train'}"])
    lines += ["", *(f"- {k}: {v}" for k, v in notes.items()), *recipe,
              f"- extra overrides: {' '.join(setup.overrides) or 'none'}"]
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")[:40]
    path = Path(setup.out or default_folder()) / f"neardup-{slug}-{datetime.date.today()}.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n\nwritten: {path}", flush=True)
    return lines


def parse(argv: list[str] | None) -> Setup:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="", help="a prepared dataset (manifests built if missing); default: synth")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--per-class", type=int, default=48)
    p.add_argument("--epochs", type=int, default=0, help="supervised epochs (0 = the config's)")
    p.add_argument("--ssl-epochs", type=int, default=0, help="self-supervised epochs (0 = its config's)")
    p.add_argument("--set", action="append", default=[], help="override for both runs, e.g. model.bits=64")
    p.add_argument("--ssl-config", default=str(SSL_CONFIG), help="the self-supervised recipe")
    p.add_argument("--ssl-set", action="append", default=[], help="self-supervised overrides")
    p.add_argument("--supervised", default="", help="a best.pt instead of training the supervised model")
    p.add_argument("--ssl", default="", help="a best.pt instead of training the self-supervised model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--copies", type=int, default=1, help="copies per test video, each with its own edits")
    p.add_argument("--ssl-train", choices=("train", "library"), default="train",
                   help="self-supervised training videos: the train split, or the library (train + the copies' "
                        "originals, no labels)")
    p.add_argument("--work", default=Setup.work)
    p.add_argument("--out", default=Setup.out)
    a = p.parse_args(argv)
    return Setup(root=a.root, classes=a.classes, per_class=a.per_class, epochs=a.epochs, ssl_epochs=a.ssl_epochs,
                 overrides=tuple(a.set), ssl_config=a.ssl_config, ssl_overrides=tuple(a.ssl_set),
                 supervised=a.supervised, ssl=a.ssl, seed=a.seed, copies=a.copies, ssl_train=a.ssl_train,
                 work=a.work, out=a.out)


def main(argv: list[str] | None = None) -> list[str]:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return run(parse(argv))


if __name__ == "__main__":
    main()
