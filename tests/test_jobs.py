"""`ray start --head` + `c3dhash job submit` of a tiny training reaches SUCCEEDED; the cluster is stopped after.
The `ray start` / `ray job submit` recipes of docs/kubernetes.md run as written (HOME in a temp folder without a
~/.ray/auth_token; with one, only the token lines run, which keep it): token-authenticated, and without the token
or with a dead address every client fails in seconds with one line naming the address and the fix. Bad configs
and missing data fail before any worker. Heads are stopped by killing the processes of their own --temp-dir (never
`ray stop`, which stops every Ray on the machine)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from c3dhash.cluster import jobs
from c3dhash.cluster.cli import main
from c3dhash.cluster.config import config_to_dict, load_config
from c3dhash.cluster.connect import ConnectError, probe
from c3dhash.cluster.serve.app import free_port
from train_helpers import make_tiny_dataset, read_metrics, tiny_overrides

pytestmark = [pytest.mark.ray, pytest.mark.subprocess]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if the driver reaches Ray (order-proof: the suite's shared local Ray may be running)."""
    from c3dhash.cluster import driver
    monkeypatch.setattr(driver, "connect", lambda *a, **k: pytest.fail("Ray was reached"))


def test_unknown_key_fails_before_any_worker(capsys, tmp_path, no_ray):
    code = main(["train", "--config", str(REPO / "configs/synth-cpu.yaml"), "--set", "train.lr_max=1"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown key(s) lr_max" in err and "valid keys:" in err


def test_missing_dataset_fails_before_any_worker(capsys, tmp_path, no_ray):
    code = main(["train", "--config", str(REPO / "configs/synth-cpu.yaml"), "--set", f"data.root={tmp_path}/none"])
    err = capsys.readouterr().err
    assert code == 2 and "dataset folder not found" in err and f"{tmp_path}/none" in err


def stop_head(temp: str) -> None:
    """Kill the processes of the Ray head started with --temp-dir=temp (only those)."""
    def pids() -> list[int]:
        out = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if temp.encode() in cmdline.read_bytes():
                    out.append(int(cmdline.parent.name))
            except OSError:
                pass
        return out
    # gcs_server, raylet and the autoscaler monitor outlive a SIGTERM by 16 s+ (a graceful drain nobody needs
    # here, and 15 s of every teardown): 2 s, then SIGKILL
    for sig, grace in ((signal.SIGTERM, 2), (signal.SIGKILL, 15)):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace
        while pids() and time.time() < deadline:
            time.sleep(0.5)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    """A real single-node Ray cluster started with the CLI, stopped afterwards whatever happens; shared by the job
    tests (a `ray start` is ~10 CPU-s): the stop test runs first, so the training after it also shows a head that
    stopped a job still runs the next one."""
    dash, gcs = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    ray_cli = shutil.which("ray", path=str(BIN))
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix sockets live under it (107-char limit)
    try:
        started = subprocess.run([ray_cli, "start", "--head", f"--port={gcs}", "--num-cpus=2",
                                  "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                                  f"--temp-dir={temp}", f"--dashboard-agent-listen-port={free_port()}"],
                                 env=env, capture_output=True, text=True)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"http://127.0.0.1:{dash}"
    finally:
        stop_head(temp)


def test_job_stop(head):
    job_id = jobs.submit(head, "sleep 600", working_dir=None)
    assert jobs.stop(head, job_id)
    with pytest.raises(jobs.JobError, match="STOPPED"):
        jobs.wait(head, job_id, timeout_s=60)


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


# ---------------------------------------------------------------- the docs recipes, token auth, dead addresses

JOB = "python -c \"import ray; ray.init(); print('recipe job ok', ray.cluster_resources()['CPU'])\""


def recipe(name: str) -> list[str]:
    """The commands of the docs block after `<!-- recipe: NAME -->` (continuation lines joined)."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    block = re.search(rf"<!-- recipe: {name} -->\n```bash\n(.*?)```", text, re.S)
    assert block, f"docs/kubernetes.md has no recipe {name!r}"
    return [c.strip() for c in block.group(1).replace("\\\n", " ").splitlines() if c.strip()]


def clean_env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO), **extra}


def run_line(line: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


TOKEN = "c3dhash-test-token-0123456789abcdef0123456789abcdef"


def before_ray_start(lines: list[str]) -> list[str]:
    """The recipe's lines before its `ray start`: the token handling, all that depends on a ~/.ray/auth_token."""
    starts = [i for i, line in enumerate(lines) if line.startswith("ray start")]
    assert starts, lines
    return lines[:starts[0]]


def test_local_recipe_keeps_an_existing_token(tmp_path):
    """With a ~/.ray/auth_token already there, the recipe's token lines keep it and make it the one this shell's
    ray commands use (`ray start` among them). The whole recipe runs once below, creating the token."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token = home / ".ray" / "auth_token"
    token.write_text(TOKEN)
    script = "\n".join([*before_ray_start(recipe("local")), 'echo "mode=$RAY_AUTH_MODE"', "ray get-auth-token"])
    done = run_line("set -euo pipefail\n" + script, clean_env(home), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert token.read_text() == TOKEN  # not regenerated, not rewritten
    assert done.stdout.splitlines()[-2:] == ["mode=token", TOKEN], done.stdout[-2000:]


@pytest.fixture
def recipe_head(tmp_path):
    """The local recipe, run line by line in one shell state, on free ports, in a HOME without a token (the recipe
    creates it; with one, see test_local_recipe_keeps_an_existing_token); yields (gcs, dash, home, done)."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    gcs, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="rayr", dir="/tmp")
    lines = recipe("local")
    assert lines[0].startswith("export RAY_AUTH_MODE=token")
    # Free ports (other Ray heads may run on this machine; the job agent's default 52365 would collide)
    script = "\n".join(lines).replace("ray start --head", f"ray start --head --port={gcs} --dashboard-port={dash} "
                                      f"--dashboard-agent-listen-port={free_port()} --num-cpus=1 "
                                      f"--include-dashboard=true --temp-dir={temp}")
    script = script.replace("c3dhash job submit --wait", f"c3dhash job submit --address http://127.0.0.1:{dash} --wait")
    script = script.replace("c3dhash train --config configs/ucf101-64bit.yaml", JOB)
    assert JOB in script and f"--port={gcs}" in script and f"127.0.0.1:{dash}" in script
    try:
        done = run_line("set -euo pipefail\n" + script, clean_env(home), timeout=400)
        yield gcs, dash, home, done
    finally:
        stop_head(temp)


def test_readme_recipes_work_token_authenticated(recipe_head, tmp_path):
    gcs, dash, home, done = recipe_head
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = re.search(r"raysubmit_\w+", done.stdout).group(0)
    assert f"{job_id} SUCCEEDED" in done.stdout
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert token  # the head runs with the token of ~/.ray/auth_token, which the recipe created
    logs = run_line(f"c3dhash job logs --address http://127.0.0.1:{dash} {job_id}",
                    clean_env(home, RAY_AUTH_MODE="token"))
    assert "recipe job ok" in logs.stdout, logs.stderr[-2000:]

    # The remote recipe from another machine: no ~/.ray there, the head's token in RAY_AUTH_TOKEN.
    other = tmp_path / "other-home"
    other.mkdir()
    lines = [line for line in recipe("remote") if not line.startswith(("ray start", "c3dhash job logs"))]
    script = "\n".join(lines).replace("$(ssh HEAD cat .ray/auth_token)", f"$(cat {home}/.ray/auth_token)")
    script = script.replace("http://HEAD:8265", f"http://127.0.0.1:{dash}")
    script = script.replace("c3dhash train --config configs/ucf101-64bit.yaml", JOB)
    remote = run_line("set -euo pipefail\n" + script, clean_env(other))
    assert remote.returncode == 0 and "recipe job ok" in remote.stdout, remote.stderr[-3000:]

    # Without the token: one line naming the address and the fix, within seconds.
    for cmd in (f"c3dhash job submit --working-dir '' --address http://127.0.0.1:{dash} -- echo hi",
                f"ray job submit --address http://127.0.0.1:{dash} -- echo hi"):
        t0 = time.time()
        bad = run_line(cmd, clean_env(other))
        assert bad.returncode != 0 and time.time() - t0 < 30, bad
        if cmd.startswith("c3dhash"):
            assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
            assert f"http://127.0.0.1:{dash}" in bad.stderr and "export RAY_AUTH_MODE=token" in bad.stderr
            assert "RAY_AUTH_TOKEN=" in bad.stderr
    data = make_tiny_dataset(tmp_path / "synth")
    t0 = time.time()
    bad = run_line(f"c3dhash train --config configs/synth-cpu.yaml --set data.root={data} "
                   f"--set data.pk_classes=4 --set cluster.storage_path={tmp_path / 'runs'} "
                   f"--address 127.0.0.1:{gcs}", clean_env(other))
    assert bad.returncode == 2 and time.time() - t0 < 60, bad.stderr[-2000:]  # ray.init alone took 20 s
    last = bad.stderr.strip().splitlines()[-1]
    assert f"Ray at 127.0.0.1:{gcs} refused us" in last and "export RAY_AUTH_MODE=token" in last
    probe_env = clean_env(other)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", f"from c3dhash.cluster.connect import probe; probe('127.0.0.1:{gcs}')"],
                         env=probe_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "refused us" in out.stderr and time.time() - t0 < 10


def test_dead_addresses_fail_fast_in_one_line(tmp_path):
    data = make_tiny_dataset(tmp_path / "synth")
    dead = free_port()
    for name in ("q.npz", "d.npz", "best.pt"):  # paths are checked first (they exist): the address is what fails
        (tmp_path / name).write_bytes(b"")
    cases = {("job", "submit", "--address", f"http://127.0.0.1:{dead}", "--", "echo"): f"http://127.0.0.1:{dead}",
             ("train", "--config", str(REPO / "configs/synth-cpu.yaml"), "--set", f"data.root={data}",
              "--set", "data.pk_classes=4", "--set", f"cluster.storage_path={tmp_path / 'runs'}",  # 4 classes
              "--address", f"127.0.0.1:{dead}"):
             f"127.0.0.1:{dead}",
             ("eval", "--query", str(tmp_path / "q.npz"), "--db", str(tmp_path / "d.npz"), "--shards", "2",
              "--address", f"127.0.0.1:{dead}"):
             f"127.0.0.1:{dead}",
             ("index", "--checkpoint", str(tmp_path / "best.pt"), "--videos", str(data), "--out", str(tmp_path / "ix"),
              "--workers", "2", "--address", f"127.0.0.1:{dead}"): f"127.0.0.1:{dead}"}
    for argv, address in cases.items():  # whole commands: bounds include importing torch/ray on a busy machine
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "c3dhash.cluster.cli", *argv], env=clean_env(tmp_path), cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and time.time() - t0 < 60, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot reach Ray at {address}" in lines[0] and "ray start" in lines[0], lines
    assert not list((tmp_path / "runs").glob("*/config.yaml"))  # nothing written for a run that could not start
    t0 = time.time()
    with pytest.raises(ConnectError, match=f"cannot reach Ray at 127.0.0.1:{dead}"):
        probe(f"127.0.0.1:{dead}")  # what the driver does before ray.init (which retried for minutes)
    assert time.time() - t0 < 10


@pytest.mark.parametrize("body", [None, b"<html>not ray</html>"])
def test_job_submit_to_a_non_ray_http_server_is_one_line(capsys, body):
    """A plain web server (404 on /api/version, or 200 with HTML) is not a Ray head: exit 2, one line, no traceback."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert main(["job", "submit", "--address", url, "--", "echo", "hi"]) == 2
    finally:
        server.shutdown()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{url} answers HTTP but is not a Ray dashboard" in lines[0], lines
