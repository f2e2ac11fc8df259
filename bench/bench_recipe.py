"""Recipe robustness: the demo recipe trained on several generated synthetic variants, test mAP@all per variant.

    .venv/bin/python bench/bench_recipe.py --jobs 2                        # every variant + shipped seeds 0-2
    c3dhash bench recipe -- --variants shipped,c12-s2 --epochs 8 --jobs 2  # a subset, shorter
    c3dhash bench recipe -- --variants c12-s2 --epochs 2 --probe           # first epochs, per-step statistics
    c3dhash bench recipe -- --set loss.margin=20 --set train.warmup_epochs=2   # a candidate recipe

Each run trains configs/synth-cpu.yaml (plus --set overrides) in ONE process through distributed/trainer.py
(no Ray, one torch thread): the math is the world-size-independent one of the 2-worker demo (SyncBN + the
gathered loss, tests/test_elastic.py), only the wall time differs. Runs go in parallel processes, --jobs at
a time. The test mAP@all is the demo's: test queries against the train database, best validation checkpoint.
A variant is (classes, frame size, codec, synth seed) of `make_synth_dataset` plus the init/sampler seed
(train.seed = data.seed); the generator has no speed knob (speeds are drawn per video). Every figure is printed
with the load average (os.getloadavg) at the start and end of its run: minutes depend on the load.
--probe adds, per step: mean |h|, the fraction of |h| > 0.9 (tanh saturation), the mean squared-L2 distance of
positive and negative pairs (vs the margin), the active-triplet fraction and the gradient norm per layer.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


from c3dhash.cluster.config import load_config  # noqa: E402
from c3dhash.distributed import checkpoint as ckpt  # noqa: E402
from c3dhash.distributed.build import build_data, build_model  # noqa: E402
from c3dhash.distributed.job import JobConfig  # noqa: E402
from c3dhash.distributed.trainer import Hooks, Trainer  # noqa: E402
from c3dhash.distributed.triplet import sq_distances  # noqa: E402
from c3dhash.eval.index.encode import encode_loader, to_codes  # noqa: E402
from c3dhash.eval.metrics.exact import evaluate  # noqa: E402
from c3dhash.loaders.atomic import atomic_write_text  # noqa: E402
from c3dhash.loaders.pipelines import build_eval_loader  # noqa: E402
from c3dhash.loaders.splits import build_splits, load_split  # noqa: E402
from c3dhash.loaders.synth import make_synth_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synth-cpu.yaml"


@dataclass(frozen=True)
class Variant:
    name: str
    classes: int = 8
    size: tuple[int, int] = (48, 64)  # the generator's frames (H, W); the recipe resizes to 40x40
    codec: str = "vp9"
    data_seed: int = 0  # make_synth_dataset(seed=): which videos
    seed: int = 0  # train.seed and data.seed: init, batches, clip offsets

    @property
    def data_key(self) -> str:
        h, w = self.size
        return f"c{self.classes}-{h}x{w}-{self.codec}-d{self.data_seed}"


# The shipped set (c8, 48x64, vp9, data seed 0) over init seeds, then one axis changed per variant.
VARIANTS = (
    Variant("shipped"), Variant("shipped-s1", seed=1), Variant("shipped-s2", seed=2),
    Variant("c4-d1", classes=4, data_seed=1), Variant("c6-d2", classes=6, data_seed=2),
    Variant("c10-d3", classes=10, data_seed=3), Variant("c12-s2", classes=12, data_seed=4, seed=2),
    Variant("mjpeg-d5", codec="mjpeg", data_seed=5), Variant("f32-d6", size=(32, 32), data_seed=6),
    Variant("f96-c6-d7", classes=6, size=(72, 96), data_seed=7, seed=1),
)
# The robustness grid of issue 35: 10 and 12 classes x 3 synth seeds x 2 frame sizes x 3 init seeds (36 runs,
# 12 data sets; `--variants grid`, split over invocations with `--shard I/N`, a run's figure does not depend on
# the split). Synth seeds 20-22 are used nowhere else, so no run here was looked at while tuning the recipe.
GRID = tuple(Variant(f"g-c{c}-{h}x{w}-d{d}-s{s}", classes=c, size=(h, w), data_seed=d, seed=s)
             for c in (10, 12) for h, w in ((48, 64), (32, 32)) for d in (20, 21, 22) for s in (0, 1, 2))
GRID_TARGET = 0.85
BY_NAME = {v.name: v for v in VARIANTS + GRID}


@dataclass(frozen=True)
class Setup:
    config: str = str(CONFIG)
    overrides: tuple[str, ...] = ()
    epochs: int = 0  # 0 = the config's
    per_class: int = 48
    frames: int = 32
    probe: bool = False
    stop_after: int = 0  # stop after this many epochs (the config's schedule), validate, no test figure
    work: str = "runs/bench_recipe"


@dataclass
class Result:
    variant: str
    map_all: float = float("nan")
    minutes: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end
    epochs: list[dict[str, Any]] = field(default_factory=list)  # per-epoch report metrics
    probe: list[dict[str, float]] = field(default_factory=list)
    error: str = ""


def job_config(setup: Setup, v: Variant, root: Path, run: Path) -> JobConfig:
    extra = [f"data.root={root}", f"train.seed={v.seed}", f"data.seed={v.seed}", "cluster.num_workers=1",
             f"cluster.name={run.name}", f"cluster.storage_path={run.parent}", "train.checkpoint_every=1000"]
    if setup.epochs:  # the config's validation points, scaled to the new length (its end stays its end)
        own = load_config(setup.config, list(setup.overrides)).train
        every = -(-setup.epochs * own.eval_every // own.epochs) if own.eval_every else 0
        extra += [f"train.epochs={setup.epochs}", f"train.eval_every={every}"]
    cfg = load_config(setup.config, [*extra, *setup.overrides])  # the user's --set wins
    if cfg.data.pk_classes > v.classes:  # a set with fewer classes than P (the config's or --set's): every class
        cfg = load_config(setup.config, [*extra, *setup.overrides, f"data.pk_classes={v.classes}"])
    return cfg


def make_data(setup: Setup, v: Variant, *, workers: int) -> Path:
    root = Path(setup.work) / "data" / f"{v.data_key}-n{setup.per_class}-t{setup.frames}"
    if not (root / "ucfTrainTestlist").is_dir():
        make_synth_dataset(root, classes=v.classes, per_class=setup.per_class, frames=setup.frames, size=v.size,
                           codec=v.codec, seed=v.data_seed, workers=workers, progress=False)
    return root


class Probe:
    """Per-step statistics through hooks (forward output, optimiser pre-step grads): the Trainer is unchanged."""

    def __init__(self, trainer: Trainer, margin: float) -> None:
        self.rows: list[dict[str, float]] = []
        self.margin, self._h = margin, None
        trainer.model.register_forward_hook(self._on_forward)
        trainer.opt.register_step_pre_hook(lambda opt, args, kwargs: self._on_step(trainer))
        self._labels = None
        real = trainer.train_step

        def step(clips, labels):
            self._labels = labels
            return real(clips, labels)
        trainer.train_step = step

    def _on_forward(self, module, inputs, output) -> None:
        if module.training:
            self._h = output.detach()

    def _on_step(self, trainer: Trainer) -> None:
        h, y = self._h, self._labels
        d = sq_distances(h, h)
        same = y[:, None] == y[None, :]
        pos = same & ~torch.eye(len(y), dtype=torch.bool)
        row = {"step": trainer.state.global_step + 1, "lr": trainer.lr, "h_abs": float(h.abs().mean()),
               "h_sat": float((h.abs() > 0.9).float().mean()), "d_pos": float(d[pos].mean()),
               "d_neg": float(d[~same].mean()), "margin": self.margin}
        for name, p in trainer.module.named_parameters():
            if p.grad is not None and p.dim() > 1:  # conv and linear weights (BN's are 1-D)
                row[f"g:{name.removesuffix('.weight')}"] = float(p.grad.norm())
        self.rows.append(row)
        print("probe " + json.dumps(row), flush=True)  # readable in the run's log while it trains


def test_map(job: JobConfig, net: torch.nn.Module) -> float:
    """The demo's figure: test queries against the train database, codes = sign of the mean of clip outputs."""
    codes = []
    for split in ("test", "train"):
        records = load_split(job.data, split)
        loader = build_eval_loader(records, job.data.root, job.data, rank=0, world_size=1, device_id=None)
        index, outputs = encode_loader(net, loader, device=torch.device("cpu"), amp=job.train.amp)
        codes.append(to_codes(index, outputs, records, job.model.bits))
    return float(evaluate(codes[0], codes[1])["map_all"])


class _Stop(Exception):
    """--stop-after: raised from the report hook at an epoch end (the Trainer's own exit path)."""


def _reporter(setup: Setup, res: Result):
    def report(metrics: dict[str, Any], state: Any) -> None:
        if metrics.get("report") != "epoch":
            return
        res.epochs.append(dict(metrics))
        if setup.stop_after and len(res.epochs) >= setup.stop_after:
            raise _Stop
    return report


def train_one(setup: Setup, v: Variant) -> Result:
    torch.set_num_threads(1)
    res, t0 = Result(v.name, load=(os.getloadavg()[0], 0.0)), time.time()
    run = Path(setup.work) / "runs" / v.name
    job = job_config(setup, v, make_data(setup, v, workers=1), run)
    build_splits(dataset="synth", root=job.data.root, split=job.data.split, val_per_class=job.data.val_per_class)
    net = build_model(job, torch.device("cpu"))
    train, queries, database = build_data(job, torch.device("cpu"))
    trainer = Trainer(job=job, model=net, device=torch.device("cpu"), train_loader=train, queries=queries,
                      database=database, run_dir=run,
                      hooks=Hooks(report=_reporter(setup, res)))
    probe = Probe(trainer, job.loss.margin) if setup.probe else None
    try:
        trainer.fit()
        net.load_state_dict(ckpt.load(run / ckpt.BEST_FILE)["model"])
        res.map_all = test_map(job, net)
    except _Stop:  # the model as it is after --stop-after epochs, on the validation split
        val = trainer.validate()
        res.epochs[-1]["val_map"] = val["map_all"] if val else float("nan")
    res.probe = probe.rows if probe else []
    res.minutes, res.load = (time.time() - t0) / 60, (res.load[0], os.getloadavg()[0])
    return res


def _pool_task(task: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """One run in a pool process, plain dicts in and out; its prints go to <work>/runs/<name>.log."""
    setup, v = Setup(**task[0]), Variant(**task[1])
    log = Path(setup.work) / "runs" / f"{v.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            return dataclasses.asdict(train_one(setup, v))
        except Exception as exc:  # one failed variant must not lose the others' figures
            return dataclasses.asdict(Result(v.name, error=f"{type(exc).__name__}: {exc}"))


def run_all(setup: Setup, variants: list[Variant], *, jobs: int) -> list[Result]:
    for v in {v.data_key: v for v in variants}.values():  # once per data set, all cores
        make_data(setup, v, workers=max(1, jobs))
    if jobs <= 1:
        return [train_one(setup, v) for v in variants]
    # A spawned child finds the task function by module name: this file run as __main__ (directly, or by
    # `c3dhash bench` through runpy) is not importable there, the module `bench_recipe` is (sys.path travels).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    worker = importlib.import_module("bench_recipe")._pool_task
    tasks = [(dataclasses.asdict(setup), dataclasses.asdict(v)) for v in variants]
    with mp.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
        return [Result(**r) for r in pool.map(worker, tasks, chunksize=1)]


def stalled_epochs(res: Result, margin: float) -> int:
    """Epochs whose mean training loss stayed above 0.9 x margin (all triplets active, no separation yet)."""
    return sum(1 for e in res.epochs if e.get("loss", 0.0) > 0.9 * margin)


def format_table(results: list[Result], *, margin: float) -> str:
    w = max([12, *(len(r.variant) + 1 for r in results)])  # the grid's names are longer than the variants'
    lines = [f"{'variant':<{w}}{'test mAP@all':>13}{'val mAP':>9}{'stalled ep':>11}{'minutes':>9}{'load':>12}"]
    for r in results:
        val = max([e["val_map"] for e in r.epochs if "val_map" in e] or [float("nan")])
        lines.append(f"{r.variant:<{w}}{r.map_all:>13.4f}{val:>9.4f}{stalled_epochs(r, margin):>11d}"
                     f"{r.minutes:>9.1f}{r.load[0]:>6.1f}-{r.load[1]:<5.1f}" + (f"  {r.error}" if r.error else ""))
    grid = [r for r in results if r.variant.startswith("g-")]
    if grid:
        done = [r for r in grid if not r.error]
        worst = min(done, key=lambda r: r.map_all, default=None)
        lines.append(f"grid: {sum(r.map_all >= GRID_TARGET for r in done)} of {len(grid)} runs >= {GRID_TARGET}"
                     + (f", lowest {worst.map_all:.4f} ({worst.variant})" if worst else "")
                     + (f"; {len(GRID)} in the whole grid" if len(grid) < len(GRID) else ""))
    shipped = [r.map_all for r in results if r.variant.startswith("shipped") and not r.error]
    if len(shipped) > 1:
        lines.append(f"shipped set over {len(shipped)} seeds: mean {statistics.mean(shipped):.4f}, min "
                     f"{min(shipped):.4f}, max {max(shipped):.4f}, stdev {statistics.stdev(shipped):.4f}")
    return "\n".join(lines)


def format_probe(res: Result) -> str:
    if not res.probe:
        return ""
    grads = [k for k in res.probe[0] if k.startswith("g:")]
    pick = [grads[0], *grads[len(grads) // 2:len(grads) // 2 + 1], grads[-1]] if grads else []
    lines = [f"probe {res.variant}: step lr |h| sat>0.9 d_pos d_neg margin " + " ".join(g[2:] for g in pick)]
    for row in res.probe:
        lines.append(f"  {row['step']:4d} {row['lr']:.2e} {row['h_abs']:.3f} {row['h_sat']:.3f} {row['d_pos']:7.2f} "
                     f"{row['d_neg']:7.2f} {row['margin']:5.1f} " + " ".join(f"{row[g]:.3g}" for g in pick))
    return "\n".join(lines)


def parse(argv: list[str] | None) -> tuple[Setup, list[Variant], argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="all",
                   help=f"comma list, 'all' ({', '.join(v.name for v in VARIANTS)}) or 'grid' (the {len(GRID)} runs "
                        f"g-c<classes>-<HxW>-d<synth seed>-s<init seed>)")
    p.add_argument("--shard", default="1/1", help="I/N: only every N-th selected run, from the I-th (1-based)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one torch thread each)")
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs (validation points scaled with it)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--per-class", type=int, default=48, help="videos per class of the generated sets")
    p.add_argument("--frames", type=int, default=32, help="frames per generated video")
    p.add_argument("--probe", action="store_true", help="per-step code and gradient statistics")
    p.add_argument("--stop-after", type=int, default=0, help="stop after N epochs of the schedule; val mAP only")
    p.add_argument("--work", default="runs/bench_recipe", help="data sets and runs (reused between calls)")
    p.add_argument("--json", default="", help="also write every figure to this JSON file")
    a = p.parse_args(argv)
    groups = {"all": [v.name for v in VARIANTS], "grid": [v.name for v in GRID]}
    names = [m for n in a.variants.split(",") if n.strip() for m in groups.get(n.strip(), [n.strip()])]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; choose from all, grid, {', '.join(BY_NAME)}")
    try:
        i, n = (int(x) for x in a.shard.split("/"))
        if not 1 <= i <= n:
            raise ValueError
    except ValueError:
        p.error(f"--shard {a.shard!r}: expected I/N with 1 <= I <= N, e.g. 2/3")
    names = names[i - 1::n]
    setup = Setup(config=a.config, overrides=tuple(a.overrides), epochs=a.epochs, per_class=a.per_class,
                  frames=a.frames, probe=a.probe, stop_after=a.stop_after,
                  work=a.work)
    return setup, [BY_NAME[n] for n in names], a


def main(argv: list[str] | None = None) -> list[Result]:
    setup, variants, a = parse(argv)
    t0, load0 = time.time(), os.getloadavg()
    results = run_all(setup, variants, jobs=a.jobs)
    margin = load_config(setup.config, list(setup.overrides)).loss.margin
    for r in results:
        if r.probe:
            print(format_probe(r))
    print(f"recipe: {setup.config} {' '.join(setup.overrides)}; epochs {setup.epochs or 'config'}; "
          f"{setup.per_class} videos/class, {setup.frames} frames; {a.jobs} job(s), {os.cpu_count()} cores")
    print(format_table(results, margin=margin))
    print(f"total {(time.time() - t0) / 60:.1f} min; load average at start {load0[0]:.1f} {load0[1]:.1f} "
          f"{load0[2]:.1f}, at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if a.json:
        atomic_write_text(a.json, json.dumps([r.__dict__ for r in results], indent=1, default=str))
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/results.py, also under `c3dhash bench`
    from results import recorded
    with recorded("recipe"):
        main()
