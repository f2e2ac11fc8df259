"""The wheel a user installs (issue 32): one namespace, beside dask's `distributed`, self-sufficient.

Built in the suite from a copy of this checkout (`pip wheel --no-deps`), installed into fresh venvs that borrow
only the third-party packages of the shared venv (tests/wheel_helpers.py). Slow tier: a wheel build is ~5 s,
the demo from an empty folder a few minutes on 2 cores.
"""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from wheel_helpers import (FAKE_DASK, build_wheel, digests, fake_dask_wheel, fresh_venv, pip_install,
                           pip_uninstall, run, site_packages)

pytestmark = pytest.mark.slow

SHIPPED = {"c3dhash/configs/synth-cpu.yaml", "c3dhash/configs/ucf101-64bit.yaml", "c3dhash/bench/bench_loss.py",
           "c3dhash/cluster/cli.py", "c3dhash/eval/index/folder.py",
           "c3dhash/bench/tiny_retrieval.py"}  # bench serve's tiny videos and model


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def record_rows(record: str) -> list[str]:
    return [row[0] for row in csv.reader(record.splitlines()) if row]


def test_wheel_holds_only_the_c3dhash_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        (record,) = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
        names = record_rows(z.read(record).decode())
        entry_points = z.read(record.replace("RECORD", "entry_points.txt")).decode()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"c3dhash", record.split("/")[0]}, tops  # no top-level cluster/, distributed/, eval/, ...
    assert SHIPPED <= set(names), SHIPPED - set(names)
    assert not [n for n in names if n.startswith("c3dhash/tests/")] and "c3dhash/setup.py" not in names
    assert "c3dhash = c3dhash.cluster.cli:main" in entry_points


def test_installs_beside_dask_and_uninstalls_alone(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, fake_dask_wheel(tmp_path))
    site = site_packages(python)
    before = digests(site, FAKE_DASK)
    pip_install(python, wheel)
    assert digests(site, FAKE_DASK) == before  # dask's __init__, config, worker untouched
    (record,) = site.glob("c3dhash-*.dist-info/RECORD")
    installed = record_rows(record.read_text())
    outside = [n for n in installed if not n.startswith(("c3dhash/", record.parent.name + "/", "../../../bin/c3dhash"))]
    assert outside == [], outside
    assert "../../../bin/c3dhash" in installed  # the console script, and nothing else outside the package
    probe = "from distributed import Client; import c3dhash.eval.index as i; print(Client.kind, i.__file__)"
    out = run([python, "-c", probe], cwd=tmp_path).stdout.split()
    assert out[0] == "dask" and out[1].startswith(str(site / "c3dhash")), out
    pip_uninstall(python, "c3dhash")
    assert digests(site, FAKE_DASK) == before and not (site / "c3dhash").exists()
    again = run([python, "-c", "from distributed import Client; print(Client.kind)"], cwd=tmp_path)
    assert again.stdout.strip() == "dask"


def test_user_modules_do_not_shadow_the_api(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, wheel)
    work = tmp_path / "project"
    work.mkdir()
    for name in ("model", "eval", "distributed", "cluster", "loaders"):  # a user's own modules, first on sys.path
        (work / f"{name}.py").write_text(f"raise ImportError('the user module {name}.py was imported')\n")
    probe = ("from c3dhash.eval.index.folder import VideoIndex; from c3dhash.model import build_hash_net; "
             "import c3dhash.distributed.triplet, c3dhash.cluster.cli; print(VideoIndex.__module__)")
    assert run([python, "-c", probe], cwd=work).stdout.strip() == "c3dhash.eval.index.folder"
    assert "usage: c3dhash" in run([python.parent / "c3dhash", "search", "--help"], cwd=work).stdout


def test_demo_and_bench_run_from_an_empty_folder(wheel, tmp_path, monkeypatch):
    """The issue's Done-when: the wheel in a fresh venv runs `c3dhash demo` (shortened) with its shipped config;
    a benchmark writes its results file under the working directory, not into site-packages."""
    monkeypatch.delenv("C3DHASH_BENCH_RESULTS")  # the suite's "off": here the file is part of what is tested
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, wheel)
    c3dhash = python.parent / "c3dhash"
    work = tmp_path / "empty"
    work.mkdir()
    run([c3dhash, "synth", "--out", "data/synth", "--classes", "2", "--per-class", "16", "--frames", "16",
         "--size", "32x32"], cwd=work)
    out = run([c3dhash, "demo", "--set", "train.epochs=1", "--set", "train.eval_every=1",
               "--set", "train.checkpoint_every=1", "--set", "data.pk_classes=2", "--set", "data.clips_per_video=1"],
              cwd=work, timeout=900).stdout  # 1 clip a video: the demo's 6 encodes of 32 videos stay short
    assert "c3dhash (trained)" in out and "LSH, untrained features" in out, out[-2000:]
    assert "TensorBoard: tensorboard --logdir runs/" in out  # the storage folder: every run side by side
    assert (work / "runs" / "synth-cpu" / "best.pt").is_file()
    assert (work / "runs" / "synth-cpu" / "test_codes.npz").is_file()
    cfg = run([c3dhash, "check-data", "--config", "synth-cpu", "--no-decode"], cwd=work).stdout
    assert "checked 32 videos" in cfg, cfg  # --config by name: the shipped file, data.root relative to here
    bench = run([c3dhash, "bench", "loss", "--", "--sizes", "16", "--repeats", "1", "--naive-max-gib", "0.01"],
                cwd=work, timeout=300).stdout
    assert "16" in bench, bench
    (written,) = (work / "bench" / "results").glob("loss-*.md")  # the parent's file only: its children write none
    assert f"results: {written}" in bench and "| 16 |" in written.read_text()
    assert not (site_packages(python) / "c3dhash" / "bench" / "results").exists()
