"""A CLI scripts can trust (issue 32): missing paths fail at once, `--json -` is stdout, one result schema,
radius search with "no match", shared flag names."""
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest

from c3dhash.cluster.cli import build_parser, main
from c3dhash.eval.codes import Codes, pack_bits, save_codes

HEAVY = ("torch", "torchvision", "ray", "nvidia", "numba")
RESULT_KEYS = {"rank", "distance", "index", "path", "label", "class"}
QUERY_KEYS = {"query", "label", "class", "error", "notes", "results"}

# main() on argv (JSON list in argv[1]) in a fresh interpreter: exit status, seconds, what got imported.
TIMED = """
import json, sys, time
t0 = time.perf_counter()
from c3dhash.cluster.cli import main
rc = main(json.loads(sys.argv[1]))
print(json.dumps({"rc": rc, "s": time.perf_counter() - t0, "modules": sorted(sys.modules)}))
"""


def timed_main(argv: list[str]) -> tuple[dict, str, float, float]:
    """(result, stderr, wall seconds of the process, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", TIMED, json.dumps(argv)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out.stdout.splitlines()[-1]), out.stderr, wall, cpu


MISSING = [
    (["search", "--index", "{t}/nowhere.index", "--video", "{t}/a.mp4"],
     "--index {t}/nowhere.index: file or folder not found"),
    (["search", "--index", "{t}/db.npz", "--video", "{t}/a.mp4"], "--video {t}/a.mp4: file not found"),
    (["eval", "--query", "{t}/q.npz", "--db", "{t}/db.npz"], "--query {t}/q.npz: file not found"),
    (["index", "--checkpoint", "{t}/best.pt", "--videos", "{t}", "--out", "{t}/i"], "--checkpoint {t}/best.pt"),
    (["index", "--checkpoint", "{t}/db.npz", "--videos", "{t}/vids", "--out", "{t}/i"], "--videos {t}/vids"),
    (["show", "--index", "{t}", "--video", "{t}/gone.webm", "--out", "{t}/r.html"], "--video {t}/gone.webm"),
    (["train", "--config", "{t}/none.yaml"], "{t}/none.yaml: config file not found"),
    (["export", "--checkpoint", "{t}/best.pt", "--out", "{t}/m.pt2"], "--checkpoint {t}/best.pt: checkpoint not found"),
    (["check-data", "--root", "{t}/data"], "--root {t}/data: folder not found"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize("argv,message", MISSING, ids=[" ".join(a[:2]) for a, _ in MISSING])
def test_a_missing_path_fails_in_under_a_second_before_heavy_imports(tmp_path, argv, message):
    (tmp_path / "db.npz").write_bytes(b"")  # exists, so the next path is the one reported
    fill = [a.format(t=tmp_path) for a in argv]
    got, err, wall, cpu = timed_main(fill)
    assert got["rc"] == 2 and err.startswith(f"c3dhash {argv[0]}: error: "), err
    assert message.format(t=tmp_path) in err and "Traceback" not in err, err
    heavy = [m for m in got["modules"] if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy[:10]
    # CPU seconds of the whole process (interpreter start included): the wall time on a quiet machine, but not
    # inflated by the load of a shared one (wall 0.9 s at load 15 and 5 s at load 28 on 2 cores, CPU 0.4 s)
    assert cpu < 1.0, (cpu, got["s"], wall)


def codes(bits: np.ndarray, labels, ids) -> Codes:
    return Codes(codes=pack_bits(bits), bits=bits.shape[1], labels=np.asarray(labels, np.int64),
                 ids=np.asarray(ids, str))


@pytest.fixture()
def db(tmp_path):
    rng = np.random.default_rng(0)
    d = rng.integers(0, 2, (40, 32)).astype(bool)
    q = d[:3].copy()
    q[1, :5] ^= True  # distance 5 from item 1
    q[2] = ~q[2]  # far from everything
    save_codes(tmp_path / "db.npz", codes(d, np.arange(40) % 4, [f"c{i % 4}/v{i}.webm" for i in range(40)]))
    save_codes(tmp_path / "q.npz", codes(q, [0, 1, 2], ["q0", "q1", "q2"]))
    return tmp_path, d, q


def test_json_dash_is_stdout_and_the_text_goes_to_stderr(db, capsys):
    t, d, q = db
    assert main(["search", "-i", str(t / "db.npz"), "-q", str(t / "q.npz"), "-k", "4", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)  # nothing else on stdout
    assert not (t / "-").exists() and "query q0" in err
    assert [len(x["results"]) for x in res["queries"]] == [4, 4, 4]
    assert main(["eval", "-q", str(t / "q.npz"), "--db", str(t / "db.npz"), "-j", "-"]) == 0
    out, err = capsys.readouterr()
    assert set(json.loads(out)) >= {"map_all", "pr_curve"} and "mAP@all" in err


def test_one_schema_ranked_by_distance_then_index(db, capsys):
    t, d, q = db
    assert main(["search", "--index", str(t / "db.npz"), "--query", str(t / "q.npz"), "--top", "40", "-j", "-"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["top"], res["max_distance"], res["num_db"], res["bits"]) == (40, None, 40, 32)
    for i, entry in enumerate(res["queries"]):
        assert set(entry) == QUERY_KEYS and entry["error"] is None
        assert all(set(r) == RESULT_KEYS for r in entry["results"])
        dist = (d != q[i]).sum(1)
        order = sorted(range(40), key=lambda j: (dist[j], j))
        assert [r["index"] for r in entry["results"]] == order
        assert [r["distance"] for r in entry["results"]] == [int(dist[j]) for j in order]
        assert [r["rank"] for r in entry["results"]] == list(range(1, 41))
        assert entry["results"][0]["path"] == f"c{order[0] % 4}/v{order[0]}.webm"
        assert entry["results"][0]["label"] == order[0] % 4


def test_max_distance_is_a_radius_search_with_no_match(db, capsys):
    t, d, q = db
    assert main(["search", "-i", str(t / "db.npz"), "-q", str(t / "q.npz"), "--max-distance", "5", "-j", "-"]) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    for i, entry in enumerate(res["queries"]):
        dist = (d != q[i]).sum(1)
        within = sorted(np.flatnonzero(dist <= 5).tolist(), key=lambda j: (dist[j], j))
        assert [r["index"] for r in entry["results"]] == within
    assert res["queries"][1]["results"][0] == {"rank": 1, "distance": 5, "index": 1, "path": "c1/v1.webm",
                                               "label": 1, "class": None}
    assert res["queries"][2]["results"] == [] and "no match within distance 5" in err


def test_flags_share_one_name_per_idea():
    """--workers is Ray actors wherever it exists; local processes are --procs; -c/-s/-a/-j/-o mean one thing."""
    import argparse
    seen: dict[str, set[str]] = {}

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    walk(p, f"{name} {sub}".strip())
            for flag in action.option_strings:
                seen.setdefault(flag, set()).add(action.dest)
                if flag == "--workers":
                    assert "Ray" in action.help, (name, action.help)
                if flag == "--procs":
                    assert "process" in action.help, (name, action.help)
    walk(build_parser(), "")
    for flag in ("-c", "-s", "-a", "-j", "-o", "-k", "-q", "-i", "-w", "--workers", "--procs"):
        assert len(seen[flag]) == 1, (flag, seen[flag])
    assert seen["-c"] == {"config"} and seen["-w"] == {"workers"} and seen["-j"] == {"json"}


class FakeJobs:
    """The Jobs API client, as far as submit/wait/logs --follow use it."""

    def __init__(self, *chunks):
        self.chunks, self.submitted, self.polls = chunks, [], 0

    def submit_job(self, entrypoint, runtime_env=None):
        self.submitted.append(entrypoint)
        return "raysubmit_fake"

    def get_job_status(self, job_id):
        from ray.job_submission import JobStatus
        self.polls += 1
        return JobStatus.RUNNING if self.polls < 2 else JobStatus.SUCCEEDED

    async def tail_job_logs(self, job_id):
        for chunk in self.chunks:
            yield chunk


def test_job_submit_waits_by_default_and_logs_follow_streams(monkeypatch, capsys):
    from c3dhash.cluster import jobs
    fake = FakeJobs("step 1\n", "step 2\n")
    monkeypatch.setattr(jobs, "client", lambda address: fake)
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    assert main(["job", "submit", "--", "echo", "hi"]) == 0
    assert fake.submitted == ["echo hi"] and fake.polls == 2  # waited until SUCCEEDED
    assert capsys.readouterr().out.splitlines() == ["raysubmit_fake", "raysubmit_fake SUCCEEDED"]
    fake.polls = 0
    assert main(["job", "submit", "--no-wait", "--", "echo", "hi"]) == 0 and fake.polls == 0
    capsys.readouterr()
    assert main(["job", "logs", "--follow", "raysubmit_fake"]) == 0
    out, err = capsys.readouterr()
    assert out == "step 1\nstep 2\n" and "raysubmit_fake RUNNING" in err
