"""`ray start --head` + `c3dhash job submit` of a tiny training reaches SUCCEEDED; the cluster is stopped after.
Also: bad configs and missing data fail in the CLI before any Ray worker starts."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray
import yaml

from cluster import jobs
from cluster.cli import main
from cluster.config import config_to_dict, load_config
from train_helpers import make_tiny_dataset, read_metrics, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_key_fails_before_any_worker(capsys, tmp_path):
    code = main(["train", "--config", str(REPO / "configs/synth-cpu.yaml"), "--set", "train.lr_max=1"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown key(s) lr_max" in err and "valid keys:" in err
    assert not ray.is_initialized()


def test_missing_dataset_fails_before_any_worker(capsys, tmp_path):
    code = main(["train", "--config", str(REPO / "configs/synth-cpu.yaml"), "--set", f"data.root={tmp_path}/none"])
    err = capsys.readouterr().err
    assert code == 2 and "dataset folder not found" in err and f"{tmp_path}/none" in err
    assert not ray.is_initialized()


@pytest.fixture
def head():
    """A real single-node Ray cluster started with the CLI, stopped afterwards whatever happens."""
    dash, gcs = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    ray_cli = shutil.which("ray", path=str(BIN))
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix sockets live under it (107-char limit)
    started = subprocess.run([ray_cli, "start", "--head", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
                              "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={temp}"],
                             env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_of_tiny_training_succeeds(head, tmp_path):
    data = make_tiny_dataset(tmp_path / "synth")
    cfg = load_config(None, tiny_overrides(data, tmp_path / "runs", "job", epochs=1, workers=1))
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    job_id = jobs.submit(head, f"c3dhash train --config {cfg_file}", working_dir=str(REPO))
    assert jobs.wait(head, job_id, timeout_s=600) == jobs.JobStatus.SUCCEEDED
    logs = jobs.logs(head, job_id)
    assert "best val mAP" in logs
    assert logs.count("epoch 1/1: val mAP@all") == 1  # a worker's line once: Ray Train's print patch echoes it
    assert "Reporting training result" not in logs  # Ray Train's per-report INFO records: cluster.log_level
    assert [r["epoch"] for r in read_metrics(tmp_path / "runs" / "job")] == [0]


def test_job_stop(head):
    job_id = jobs.submit(head, "sleep 600", working_dir=None)
    assert jobs.stop(head, job_id)
    with pytest.raises(jobs.JobError, match="STOPPED"):
        jobs.wait(head, job_id, timeout_s=60)
