"""What the driver checks before any Ray worker starts (no Ray here): manifests line by line, the skip list,
the first epoch's batches, the codec, numeric ranges; and the run-folder lock. Each failure is exit 2, one line
naming the file (and line) or key, no Ray started, nothing written in the run folder."""
import os
import shutil
import socket
import subprocess
import sys

import pytest

from c3dhash.cluster import driver
from c3dhash.cluster.cli import main
from c3dhash.cluster.config import load_config
from c3dhash.cluster.lock import LOCK_FILE, acquire, run_lock
from c3dhash.cluster.preflight import preflight
from c3dhash.loaders.manifest import read_manifest
from train_helpers import make_tiny_dataset, tiny_overrides
from videos import write_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def manifests(data, tmp_path):
    """A private copy of the tiny set's manifests, to break."""
    out = tmp_path / "manifests"
    shutil.copytree(data / "manifests" / "split1", out)
    return out


def train(data, tmp_path, *extra: str) -> list[str]:
    sets = [a for o in tiny_overrides(data, tmp_path / "runs", "pre") for a in ("--set", o)]
    (tmp_path / "empty.yaml").write_text("{}\n")
    return ["train", "--config", str(tmp_path / "empty.yaml"), *sets, *[a for o in extra for a in ("--set", o)]]


def run_cli(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """A refused run never reaches Ray (the driver's connect fails the test: pytest's Failed is a BaseException,
    which the CLI does not catch). Order-proof, unlike ray.is_initialized(): the session's local Ray may run."""
    monkeypatch.setattr(driver, "connect", lambda *a, **k: pytest.fail("Ray was reached"))


def nothing_started(tmp_path):
    assert not (tmp_path / "runs" / "pre" / "config.yaml").exists()


def test_bad_label_line_names_file_and_line(capsys, data, tmp_path, manifests):
    lines = (manifests / "train.tsv").read_text().splitlines()
    path, _, name = lines[2].split("\t")
    lines[2] = f"{path}\tseven\t{name}"
    (manifests / "train.tsv").write_text("\n".join(lines) + "\n")
    code, err = run_cli(capsys, train(data, tmp_path, f"data.manifest_dir={manifests}"))
    assert code == 2 and f"{manifests / 'train.tsv'}:3: expected path<TAB>label<TAB>class_name" in err
    assert len(err.splitlines()) == 1
    nothing_started(tmp_path)


@pytest.mark.parametrize("label, pattern", [("-1", "label -1 of .* must be >= 0"),
                                            ("3", "has label 3 here but 0 on line 2")])
def test_label_values_are_checked(capsys, data, tmp_path, manifests, label, pattern):
    lines = (manifests / "train.tsv").read_text().splitlines()
    first = lines[1].split("\t")
    same_class = next(i for i, line in enumerate(lines[2:], start=2) if line.split("\t")[2] == first[2])
    path, _, name = lines[same_class].split("\t")
    lines[same_class] = f"{path}\t{label}\t{name}"
    (manifests / "train.tsv").write_text("\n".join(lines) + "\n")
    code, err = run_cli(capsys, train(data, tmp_path, f"data.manifest_dir={manifests}"))
    assert code == 2, err
    assert f"{manifests / 'train.tsv'}:{same_class + 1}:" in err
    assert __import__("re").search(pattern, err), err
    nothing_started(tmp_path)


def test_every_video_skipped_is_an_error(capsys, data, tmp_path, manifests):
    records = read_manifest(manifests / "train.tsv")
    (manifests / "skip.tsv").write_text("path\treason\n" + "".join(f"{r.path}\tbroken\n" for r in records))
    code, err = run_cli(capsys, train(data, tmp_path, f"data.manifest_dir={manifests}"))
    assert code == 2 and f"all {len(records)} videos are listed in {manifests / 'skip.tsv'}" in err
    nothing_started(tmp_path)


def test_skip_list_is_applied_before_batches(data, tmp_path, manifests):
    records = read_manifest(manifests / "train.tsv")
    (manifests / "skip.tsv").write_text(f"path\treason\n{records[0].path}\tbroken\n")
    cfg = load_config(None, [*tiny_overrides(data, tmp_path / "runs", "pre"), f"data.manifest_dir={manifests}",
                             "train.steps_per_epoch=0"])
    plan = preflight(cfg)
    assert plan.num_train == len(records) - 1
    assert all(0 <= i < plan.num_train for b in plan.first_epoch for i in b)
    assert plan.steps_per_epoch == len(plan.first_epoch) and plan.steps_per_epoch >= 1
    assert plan.batch == cfg.data.pk_classes * cfg.data.pk_samples == len(plan.first_epoch[-1])


def test_first_epoch_batches_fail_in_the_driver(capsys, data, tmp_path):
    code, err = run_cli(capsys, train(data, tmp_path, "data.pk_classes=6", "data.pk_samples=1",
                                      "cluster.num_workers=2"))
    assert code == 2 and "data.pk_classes=6 but the split has only 4 classes" in err
    nothing_started(tmp_path)


@pytest.mark.parametrize("override, pattern", [
    ("train.lr=-1", "train.lr=-1.0 must be > 0"),
    ("train.log_every=0", "train.log_every=0 must be >= 1"),
    ("cluster.cpus_per_worker=0", "cluster.cpus_per_worker=0 must be >= 1"),
])
def test_numeric_nonsense_fails_in_the_cli(capsys, data, tmp_path, override, pattern):
    code, err = run_cli(capsys, train(data, tmp_path, override))
    assert code == 2 and pattern in err and len(err.splitlines()) == 1
    nothing_started(tmp_path)


def test_codec_the_cpu_cannot_decode(capsys, data, tmp_path):
    root = tmp_path / "mp4"
    shutil.copytree(data, root)
    manifest = root / "manifests" / "split1" / "train.tsv"
    first = read_manifest(manifest)[0]
    mp4 = first.path.rsplit(".", 1)[0] + ".mp4"
    write_video(root / mp4, frames=8, size=(32, 32), codec="mpeg4")  # a codec DALI cannot decode on CPU
    manifest.write_text(manifest.read_text().replace(first.path, mp4, 1))
    code, err = run_cli(capsys, train(data, tmp_path, f"data.root={root}"))
    assert code == 2 and "codec mpeg4 is not decodable by DALI on CPU" in err and str(root / mp4) in err
    nothing_started(tmp_path)


def test_run_folder_lock_refuses_a_second_run(capsys, data, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "runs" / "pre"
        run.mkdir(parents=True)
        (run / LOCK_FILE).write_text(f'{{"host": "{socket.gethostname()}", "pid": {holder.pid}, '
                                     f'"since": "2026-01-01 00:00:00"}}')
        (run / "config.yaml").write_text("the first run's config\n")
        code, err = run_cli(capsys, train(data, tmp_path))
        assert code == 2 and f"is in use by pid {holder.pid} on host {socket.gethostname()}" in err
        assert "cluster.name" in err
        assert (run / "config.yaml").read_text() == "the first run's config\n"  # nothing overwritten
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(f'{{"host": "{socket.gethostname()}", "pid": {dead.pid}, "since": "x"}}')
    with run_lock(tmp_path) as path:
        assert f'"pid": {os.getpid()}' in path.read_text()
        with pytest.raises(Exception, match=f"in use by pid {os.getpid()}"):
            acquire(tmp_path)  # a second taker while we hold it
    assert not path.exists()  # released
    assert f"stale lock of pid {dead.pid}" in capsys.readouterr().out
