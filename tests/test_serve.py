"""`c3dhash serve`: one Ray Serve application (token set, 127.0.0.1) on a tiny index, shared by the module.
Code and video queries over HTTP equal `c3dhash search`; bad requests and uploads get a 4xx with a message and
the service keeps serving; /reload swaps in an `index --add` rebuild under load; a killed search replica
costs no request more than one client retry, and the service recovers; the page renders in Chromium."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from browser import CHROMIUM, colour_blobs, needs_chromium, screenshot
from c3dhash.cluster.cli import main
from c3dhash.cluster.serve.app import ServeConfig, free_port, serve_config, start
from c3dhash.cluster.serve.engine import Limits, RequestError, SearchEngine, parse_codes
from c3dhash.eval.codes import Codes, save_codes, unpack_bits
from c3dhash.eval.index.folder import load_index
from c3dhash.eval.index.page import MARK_COLOURS
from c3dhash.loaders.videoio import write_video
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos, video_frames

TOKEN = "test-token-0123456789abcdef"
ODD = "class0/c0_<em>odd.webm"  # a path that would italicise the page if it were trusted as HTML


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_videos(root)  # 3 classes x 3 videos
    ckpt = lsh_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", root)
    write_video(root / ODD, video_frames(0, 7), codec="vp9")
    index = tmp_path_factory.mktemp("idx") / "lib.index"
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(root), "--out", str(index)]) == 0
    token = tmp_path_factory.mktemp("secret") / "token"
    token.write_text(TOKEN + "\n")
    cfg = ServeConfig(index=str(index), port=free_port(), token_file=str(token), cpus=0.5,
                      limits=Limits(max_upload_bytes=1 << 20, max_duration_s=4.0, timeout_s=20.0))
    import ray
    # a Ray of our own with CPUs to spare for the sharded engine's actors (start() joins it)
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    with start(cfg) as running:
        yield {"url": running.url, "root": root, "index": index, "ckpt": ckpt, "tmp": tmp_path_factory.mktemp("q")}
    ray.shutdown()


def http(svc, path, body=None, *, token=TOKEN, raw=False, timeout=60):
    data = body if raw or body is None else json.dumps(body).encode()
    req = urllib.request.Request(svc["url"] + path, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ok_json(svc, path, body=None, **kw):
    status, out = http(svc, path, body, **kw)
    assert status == 200, out
    return json.loads(out)


def ranked(res):
    return [[(r["index"], r["distance"]) for r in q["results"]] for q in res["queries"]]


def test_code_queries_equal_the_cli_search_in_process_and_over_http(svc, tmp_path, capsys):
    idx = load_index(svc["index"])
    rng = np.random.default_rng(3)
    q = Codes(codes=np.concatenate([np.asarray(idx.codes[[1, 5]]), rng.integers(0, 2**63, (3, 1), np.uint64)]),
              bits=64, labels=np.full(5, -1, np.int64), ids=np.array([f"q{i}" for i in range(5)]))
    save_codes(tmp_path / "q.npz", q)
    assert main(["search", "--index", str(svc["index"]), "--query", str(tmp_path / "q.npz"), "--top", "4",
                 "--json", str(tmp_path / "cli.json")]) == 0
    cli = ranked(json.loads((tmp_path / "cli.json").read_text()))
    eng = SearchEngine(svc["index"])
    local = eng.search(q.codes, top=4)
    assert ranked(local) == cli and cli[0][0] == (1, 0) and cli[1][0] == (5, 0)
    assert [r["path"] for r in local["queries"][0]["results"]] == [idx.items[j].path for j, _ in cli[0]]
    packed = ok_json(svc, "/search", {"codes": [[str(int(c))] for c in q.codes[:, 0]], "top": 4})
    signs = ok_json(svc, "/search", {"codes": (unpack_bits(q.codes, 64).astype(int) * 2 - 1).tolist(), "top": 4})
    assert packed == signs == local
    ints = ok_json(svc, "/search", {"codes": [[int(c)] for c in q.codes[:, 0]], "top": 4, "format": "packed"})
    assert ints == local
    r = ok_json(svc, "/search", {"codes": [[hex(int(idx.codes[2, 0]))]], "radius": 12})
    off, ii, dd = eng.searcher.radius(np.asarray(idx.codes[2:3]), 12)
    assert ranked(r) == [list(zip(ii.tolist(), dd.tolist()))] and r["queries"][0]["results"][0]["index"] == 2
    sharded = SearchEngine(svc["index"], shards=3, shard_cpus=0.1)  # actors in the service's Ray
    try:
        assert sharded.search(q.codes, top=4) == local and sharded.search(q.codes[:1], radius=12) == eng.search(
            q.codes[:1], radius=12)
    finally:
        sharded.close()


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(svc):
    idx = load_index(svc["index"])
    eng = SearchEngine(svc["index"])
    bodies = [{"codes": [[str(int(idx.codes[i % len(idx), 0]))]], "top": 1 + i % 7} for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda b: ok_json(svc, "/search", b), bodies))
    for b, g in zip(bodies, got):
        assert g == eng.search(parse_codes(b, 64), top=b["top"])


def test_video_query_equals_cli_search_video(svc, capsys):
    video = svc["root"] / "class1/c1_v01.webm"
    assert main(["search", "--index", str(svc["index"]), "--video", str(video), "--top", "5", "--json", "-"]) == 0
    cli = json.loads(capsys.readouterr().out)["queries"][0]
    status, out = http(svc, "/search/video?name=c1_v01.webm&top=5", video.read_bytes(), raw=True)
    assert status == 200, out
    got = json.loads(out)["queries"][0]
    assert got["results"] == cli["results"] and got["results"][0]["path"] == "class1/c1_v01.webm"
    assert got["results"][0]["distance"] == 0 and got["query"] == "c1_v01.webm" and got["thumb"]


def test_bad_uploads_get_a_4xx_with_a_message_and_the_service_keeps_serving(svc):
    video = (svc["root"] / "class0/c0_v01.webm").read_bytes()
    jpeg = b"\xff\xd8\xff\xe0" + bytes(2000)
    long_video = svc["tmp"] / "long.webm"
    write_video(long_video, np.repeat(video_frames(0, 1)[:1], 150, axis=0), codec="vp9")  # 6 s > 4 s
    cases = {
        "jpeg renamed .mp4": ("x.mp4", jpeg, 415, "JPEG image"),
        "empty": ("x.webm", b"", 400, "empty upload"),
        "oversized": ("x.webm", video[:64] + bytes(2 << 20), 413, "limit"),
        "truncated": ("x.webm", video[:len(video) // 3], 422, "video"),
        "traversal": ("..%2F..%2Fetc%2Fpasswd.webm", video, 400, "plain file name"),
        "not a video type": ("notes.txt", video, 415, "only video files"),
        "too long": ("long.webm", long_video.read_bytes(), 413, "limit is 4 s"),
    }
    for what, (name, data, want, msg) in cases.items():
        status, out = http(svc, f"/search/video?name={name}", data, raw=True)
        body = json.loads(out)
        assert (status, msg in body["error"]) == (want, True), (what, status, body)
        assert "Traceback" not in body["error"]
    assert http(svc, "/search", b"{not json", raw=True)[0] == 400
    assert http(svc, "/search", {"codes": [[1, 2]], "top": 3})[0] == 400  # 2 values: neither 1 word nor 64 signs
    assert http(svc, "/search", {"codes": [[-1]], "top": 3})[0] == 400
    assert http(svc, "/search", {"codes": [["1"]], "top": 0})[0] == 400
    assert http(svc, "/thumb/..%2F..%2Fetc%2Fpasswd")[0] == 404
    assert http(svc, "/nowhere")[0] == 404
    assert ok_json(svc, "/search", {"codes": [["0"]], "top": 2})["queries"][0]["results"][0]["rank"] == 1
    assert ok_json(svc, "/healthz") == {"ok": True}


def test_the_token_is_required_except_for_health_and_the_page(svc):
    assert http(svc, "/search", {"codes": [["0"]]}, token=None)[0] == 401
    assert http(svc, "/stats", token="wrong-token-0123456789")[0] == 401
    assert http(svc, "/healthz", token=None)[0] == 200 and http(svc, "/", token=None)[0] == 200
    with pytest.raises(Exception, match="binds 127.0.0.1 only"):
        ServeConfig(index=str(svc["index"]), host="0.0.0.0")
    assert main(["serve", "--index", str(svc["index"]), "--host", "0.0.0.0"]) == 2


def test_stats_and_the_serve_deploy_config(svc, tmp_path):
    import yaml
    s = ok_json(svc, "/stats")
    idx = load_index(svc["index"])
    assert (s["count"], s["bits"], s["fingerprint"]) == (len(idx), 64, idx.fingerprint)
    assert s["model"] == idx.meta["model"] and s["requests"]["served"] > 0 and s["p99_ms"] >= s["p50_ms"] > 0
    out = tmp_path / "serve.yaml"
    assert main(["serve", "--index", str(svc["index"]), "--replicas", "2", "--write-config", str(out)]) == 0
    app = yaml.safe_load(out.read_text())["applications"][0]
    assert app["import_path"] == "c3dhash.cluster.serve.app:app_builder"
    assert ServeConfig.from_args(app["args"]) == ServeConfig(index=str(svc["index"].absolute()), replicas=2)
    assert serve_config(ServeConfig(index=str(svc["index"])))["http_options"]["host"] == "127.0.0.1"


def test_parse_codes_refuses_what_it_cannot_read():
    for bad, msg in [({"codes": []}, "non-empty"), ({"codes": [[2 ** 64]]}, "2\\*\\*64"),
                     ({"codes": [["zz"]]}, "not an integer"), ({"codes": [[0]] * 300}, "at most"),
                     ({"codes": [[0, 1] * 32]}, "only -1 and \\+1"), ({"codes": [[1]], "format": "x"}, "format")]:
        with pytest.raises(RequestError, match=msg):
            parse_codes(bad, 64)
    with pytest.raises(RequestError, match="bits above 48"):
        parse_codes({"codes": [[1 << 50]]}, 48)


@needs_chromium
def test_the_page_shows_the_query_and_its_results_in_chromium(svc, tmp_path):
    item = [r.path for r in load_index(svc["index"]).items].index("class1/c1_v00.webm")
    url = f"{svc['url']}/#item={item}&top=5&token={TOKEN}"
    img = screenshot(url, tmp_path / "page.png", size=(1400, 900))
    marks = {k: [b for b in colour_blobs(img, c) if 200 <= b[0] <= 300] for k, c in MARK_COLOURS.items()}
    assert len(marks["query"]) == 1 and len(marks["same"]) == 3 and len(marks["diff"]) == 2, \
        {k: len(v) for k, v in marks.items()}
    strip = img[marks["query"][0][2] - 60:marks["query"][0][2] - 10]  # the query's thumbnail above its caption
    assert strip.std() > 10, "the query thumbnail is drawn"


@needs_chromium
def test_index_paths_are_text_never_html(svc):
    item = [r.path for r in load_index(svc["index"]).items].index(ODD)
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", f"{svc['url']}/#item={item}&top=3&token={TOKEN}"],
                         capture_output=True, text=True, timeout=120).stdout
    assert "c0_&lt;em&gt;odd.webm" in dom and "<em>" not in dom


def test_reload_swaps_in_an_added_index_under_load_without_losing_requests(svc, tmp_path):
    root, index = svc["root"], svc["index"]
    before = load_index(index)
    make_videos(root, classes=1, per_class=1, first=5)  # class0/c0_v05.webm arrives
    assert main(["index", "--checkpoint", str(svc["ckpt"]), "--videos", str(root), "--out", str(index), "--add"]) == 0
    body = {"codes": [[str(int(before.codes[0, 0]))]], "top": 3}
    with ThreadPoolExecutor(8) as pool:
        load = [pool.submit(http, svc, "/search", body) for _ in range(40)]
        r = ok_json(svc, "/reload", {})
        load += [pool.submit(http, svc, "/search", body) for _ in range(40)]
        statuses = [f.result()[0] for f in load]
    assert statuses == [200] * 80 and r["count"] == len(before) + 1 and r["reloads"] >= 1
    new = len(before)
    got = ok_json(svc, "/search", {"codes": [[str(int(load_index(index).codes[new, 0]))]], "top": 1})
    assert got["queries"][0]["results"][0] == {**got["queries"][0]["results"][0], "index": new, "distance": 0,
                                               "path": "class0/c0_v05.webm"}
    assert ok_json(svc, "/stats")["count"] == new + 1


def test_a_killed_search_replica_costs_one_client_retry_and_the_service_recovers(svc):
    """Requests in flight on a replica killed with SIGKILL get a 5xx from Serve's proxy (or a dropped
    connection); the client's one retry reaches the replica Serve starts in its place. None hangs."""
    pid = ok_json(svc, "/stats")["pid"]
    body = {"codes": [["12345"]], "top": 2}

    def timed(_):
        t = time.monotonic()
        first = retry = None
        try:
            first, _ = http(svc, "/search", body, timeout=60)
        except OSError:  # the connection dropped with the replica
            pass
        if first != 200:
            retry, _ = http(svc, "/search", body, timeout=60)
        return first, retry, time.monotonic() - t
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(timed, i) for i in range(60)]
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        results = [f.result() for f in futures]
    assert all(200 in (first, retry) or retry == 503 for first, retry, _ in results), results
    assert max(t for _, _, t in results) < 2 * 60
    assert http(svc, "/search", body)[0] == 200 and ok_json(svc, "/stats")["pid"] != pid
    print({"first try": sum(f == 200 for f, _, _ in results), "after a retry": sum(r == 200 for _, r, _ in results)})


def _codes_index(path, n, fingerprint="sha256:one"):
    from c3dhash.eval.index.folder import write_index
    from c3dhash.loaders.manifest import VideoRecord
    codes = np.random.default_rng(n).integers(0, 2**63, (n, 1), dtype=np.uint64)
    items = [VideoRecord(f"c{j % 3}/v{j}.webm", j % 3, f"c{j % 3}") for j in range(n)]
    return write_index(path, codes=codes, items=items, skipped=[],
                       meta={"bits": 64, "root": str(path.parent), "fingerprint": fingerprint, "model": {}})


def test_a_replica_follows_a_rebuilt_folder_and_refuses_another_models(tmp_path):
    """IndexSearcher (what each HTTP replica holds), without Serve (radius queries: @serve.batch needs a
    replica): a folder renamed into place is loaded before the next answer; one built by another model is
    refused (409) while the old one keeps serving."""
    import asyncio

    from c3dhash.cluster.serve.deployments import IndexSearcher
    index = _codes_index(tmp_path / "lib.index", 20)
    s = IndexSearcher(str(index))
    q = np.asarray(load_index(index).codes[3:4])
    first = asyncio.run(s.search(q, None, 30, ["q"]))
    assert first == SearchEngine(index).search(q, radius=30, names=["q"]) and s.info()["count"] == 20
    _codes_index(index, 30)
    assert asyncio.run(s.search(q, None, 30, ["q"])) == SearchEngine(index).search(q, radius=30, names=["q"])
    assert (s.info()["count"], s.info()["reloads"]) == (30, 1)
    _codes_index(index, 40, fingerprint="sha256:two")
    with pytest.raises(RequestError, match="another model") as e:
        s.follow()
    assert e.value.status == 409 and "another model" in s.info()["reload_refused"]
    assert asyncio.run(s.search(q, None, 30, ["q"]))["queries"] and s.info()["count"] == 30  # the old one serves


def test_uploads_are_judged_by_name_and_signature_before_any_decoder():
    from c3dhash.cluster.serve.uploads import check_bytes, check_name
    mp4 = bytes(4) + b"ftypisom" + bytes(100)
    ts = b"\x47" + bytes(187) + b"\x47" + bytes(100)
    assert [check_bytes(d, max_bytes=1000) for d in (b"\x1a\x45\xdf\xa3" + bytes(9), mp4, b"RIFF0000AVI LIST", ts)] \
        == ["matroska/webm", "mp4/mov", "avi", "mpeg"]
    for data, msg in [(b"GIF89a" + bytes(300), "GIF image"), (b"%PDF-1.7", "PDF"), (b"hello", "not a video")]:
        with pytest.raises(RequestError, match=msg) as e:
            check_bytes(data, max_bytes=1000)
        assert e.value.status == 415
    assert check_name("My clip (1).MP4") == "My clip (1).MP4"
    for name, status in [("../x.mp4", 400), ("a/b.webm", 400), (".hidden.mp4", 400), ("x.jpg", 415), ("", 400)]:
        with pytest.raises(RequestError) as e:
            check_name(name)
        assert e.value.status == status, name
