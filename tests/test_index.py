"""`c3dhash index` / `search --video`: an index folder from a checkpoint alone, --add == a full rebuild, a video
finds itself first at distance 0 and its class before the others, another model is refused, bad input gives one
clear message and writes nothing."""
import json
import shutil

import numpy as np
import pytest

from c3dhash.cluster.cli import main
from c3dhash.eval.codes import save_codes
from c3dhash.eval.index.folder import load_index
from c3dhash.loaders.videoio import write_video
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos, video_frames

pytestmark = pytest.mark.slow  # model encoding of real videos, end to end


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_videos(root)  # 3 classes x 3 videos
    ckpt = lsh_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", root)
    out = tmp_path_factory.mktemp("idx") / "lib.index"
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(root), "--out", str(out)]) == 0
    return root, ckpt, out


def test_index_folder_layout_and_memory_mapped_codes(lib):
    root, _, out = lib
    assert sorted(p.name for p in out.iterdir()) == ["codes.npy", "items.tsv", "meta.json", "skipped.tsv"]
    idx = load_index(out)
    assert isinstance(idx.codes, np.memmap) and idx.codes.dtype == np.uint64 and idx.codes.shape == (9, 1)
    assert [(r.label, r.class_name) for r in idx.items] == [(c, f"class{c}") for c in range(3) for _ in range(3)]
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["format"], meta["version"], meta["bits"], meta["count"]) == ("c3dhash-index", 1, 64, 9)
    assert meta["fingerprint"].startswith("sha256:") and meta["model"]["geometry"]["num_frames"] == 4
    assert meta["root"] == str(root.absolute())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temp folder left behind"


def test_a_video_finds_itself_first_then_its_class(lib, capsys):
    root, _, out = lib
    queries = [root / "class1/c1_v01.webm", root / "class2/c2_v02.webm"]
    assert main(["search", "--index", str(out), "--video", *map(str, queries), "--top", "9", "--json", "-"]) == 0
    res = json.loads(capsys.readouterr().out)
    for q, got in zip(queries, res["queries"]):
        first = got["results"][0]
        assert first["path"] == q.relative_to(root).as_posix() and first["distance"] == 0 and first["rank"] == 1
        labels = [r["label"] for r in got["results"]]
        assert got["label"] == labels[0] and labels[:3] == [labels[0]] * 3  # the 3 of its class come first
        d = [r["distance"] for r in got["results"]]
        assert d == sorted(d) and max(d[:3]) < min(d[3:])  # the model separates the classes
        ties = [(r["distance"], r["index"]) for r in got["results"]]
        assert ties == sorted(ties)  # ties by position in the index
    assert main(["search", "--index", str(out), "--video", str(queries[0]), "--top", "2"]) == 0
    table = capsys.readouterr().out
    assert "query" in table and "class1/c1_v01.webm  class1 (1)" in table.splitlines()[2]


def test_add_encodes_only_new_videos_and_equals_a_full_rebuild(lib, tmp_path, monkeypatch):
    root, ckpt, _ = lib
    videos = tmp_path / "v"
    shutil.copytree(root, videos)
    for p in videos.rglob("*_v02.webm"):
        p.unlink()
    idx = tmp_path / "inc.index"
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(videos), "--out", str(idx)]) == 0
    make_videos(videos, per_class=1, first=2)  # the three v02 videos arrive
    import c3dhash.eval.index.videos
    seen = []
    encode = c3dhash.eval.index.videos.ChunkEncoder.encode
    monkeypatch.setattr(c3dhash.eval.index.videos.ChunkEncoder, "encode", lambda self, paths: seen.extend(paths) or
                        encode(self, paths))
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(videos), "--out", str(idx), "--add"]) == 0
    assert sorted(p.rsplit("/", 1)[1] for p in seen) == ["c0_v02.webm", "c1_v02.webm", "c2_v02.webm"]
    full = tmp_path / "full.index"
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(videos), "--out", str(full)]) == 0
    a, b = load_index(idx), load_index(full)
    code_a = {r.path: (tuple(c), r.label, r.class_name) for r, c in zip(a.items, np.asarray(a.codes))}
    code_b = {r.path: (tuple(c), r.label, r.class_name) for r, c in zip(b.items, np.asarray(b.codes))}
    assert code_a == code_b and len(code_a) == 9
    assert [r.path for r in a.items][:6] == [r.path for r in b.items if "_v02" not in r.path]  # old rows stay
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(videos), "--out", str(idx), "--add"]) == 0


def test_another_model_is_refused(lib, tmp_path, capsys):
    root, _, out = lib
    other = lsh_checkpoint(tmp_path / "other.pt", root, seed=1)
    before = (out / "codes.npy").read_bytes()
    assert main(["index", "--checkpoint", str(other), "--videos", str(root), "--out", str(out), "--add"]) == 2
    assert "built by another model" in capsys.readouterr().err and (out / "codes.npy").read_bytes() == before
    q = str(root / "class0/c0_v00.webm")
    assert main(["search", "--index", str(out), "--video", q, "--checkpoint", str(other)]) == 2
    assert "did not build" in capsys.readouterr().err


def test_bad_input_is_one_clear_message_and_nothing_half_written(lib, tmp_path, capsys):
    root, ckpt, out = lib
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "no videos" in capsys.readouterr().err and not (tmp_path / "e").exists()
    mixed = tmp_path / "mixed"
    shutil.copytree(root / "class0", mixed / "class0")
    (mixed / "class0" / "broken.webm").write_bytes(b"not a video")
    write_video(mixed / "class0" / "short.webm", video_frames(0, 9, frames=2), codec="vp9")
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(mixed), "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "skipped class0/broken.webm: cannot open" in err and "padded" in err
    assert (tmp_path / "m" / "skipped.tsv").read_text().splitlines()[1].startswith("class0/broken.webm\t")
    assert len(load_index(tmp_path / "m")) == 4
    assert main(["search", "--index", str(out), "--video", str(mixed / "class0" / "short.webm"), "--top", "50"]) == 0
    captured = capsys.readouterr()
    assert "larger than the index (9 videos)" in captured.err and "padded" in captured.out
    assert len([ln for ln in captured.out.splitlines() if ln.strip()[:1].isdigit()]) == 9
    (tmp_path / "file").write_text("x")
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(root), "--out", str(tmp_path / "file")]) == 2
    assert "not a c3dhash index" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path / "mixed"), "--video", str(root / "class0/c0_v00.webm")]) == 2
    assert "not a c3dhash index" in capsys.readouterr().err


def test_a_query_dali_cannot_decode_here_is_transcoded_on_the_fly(lib, tmp_path, capsys):
    root, _, out = lib
    h264 = write_video(tmp_path / "phone.mp4", video_frames(1, 1), codec="h264")  # c1_v01 as an H.264 .mp4
    assert main(["search", "--index", str(out), "--video", str(h264), "--top", "3", "--json", "-"]) == 0
    (got,) = json.loads(capsys.readouterr().out)["queries"]
    assert [r["class"] for r in got["results"]] == ["class1"] * 3  # lossy copy: its class, not bit-exact


def test_mirrored_search_finds_the_original_of_a_flipped_copy(lib, tmp_path, capsys):
    root, _, out = lib
    flipped = write_video(tmp_path / "flipped.webm", video_frames(2, 1)[:, :, ::-1].copy(), codec="vp9")
    argv = ["search", "--index", str(out), "--video", str(flipped), "--top", "9", "--json", "-"]
    assert main(argv) == 0
    (plain,) = json.loads(capsys.readouterr().out)["queries"]
    assert main([*argv, "--mirrored"]) == 0
    (both,) = json.loads(capsys.readouterr().out)["queries"]
    first = both["results"][0]
    nearer = {r["path"]: r["distance"] for r in plain["results"]}
    assert first["path"] == "class2/c2_v01.webm" and first["distance"] <= 2  # re-encoded: near, not bit-exact
    assert nearer[first["path"]] > 2 * first["distance"] + 4  # the codes tell left from right: the mirror finds it
    assert all(r["distance"] <= nearer[r["path"]] for r in both["results"])  # never farther than plain
    assert main(["search", "--index", str(out), "--query", str(out / "codes.npy"), "--mirrored"]) == 2
    assert "use it with --video" in capsys.readouterr().err


def test_search_an_index_with_a_codes_file(lib, tmp_path, capsys):
    _, _, out = lib
    save_codes(tmp_path / "q.npz", load_index(out).as_codes())
    assert main(["search", "--index", str(out), "--query", str(tmp_path / "q.npz"), "--top", "1",
                 "--json", str(tmp_path / "top.json")]) == 0
    res = json.loads((tmp_path / "top.json").read_text())
    assert [q["results"][0]["index"] for q in res["queries"]] == list(range(9))  # each item finds itself
    assert all(q["results"][0]["distance"] == 0 for q in res["queries"])


def test_an_undecodable_query_is_an_entry_with_an_error_and_exit_1(lib, tmp_path, capsys):
    root, _, out = lib
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 2048)
    good = root / "class2/c2_v02.webm"
    assert main(["search", "-i", str(out), "--video", str(bad), str(good), "-k", "2", "--json", "-"]) == 1
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert [q["query"] for q in res["queries"]] == [str(bad), str(good)]  # in the given order, the bad one kept
    assert res["queries"][0]["error"].startswith("cannot be decoded") and res["queries"][0]["results"] == []
    assert res["queries"][1]["error"] is None and res["queries"][1]["results"][0]["distance"] == 0
    assert all(set(r) == {"rank", "distance", "index", "path", "label", "class"} for r in res["queries"][1]["results"])
    assert f"query {bad}: cannot be decoded" in captured.err
    assert main(["search", "-i", str(out), "--video", str(bad), str(good), "-k", "2", "--skip-bad", "-j", "-"]) == 0
    assert [q["query"] for q in json.loads(capsys.readouterr().out)["queries"]] == [str(good)]


def test_eval_takes_an_index_folder_as_the_database(lib, tmp_path, capsys):
    _, _, out = lib
    save_codes(tmp_path / "q.npz", load_index(out).as_codes())
    save_codes(tmp_path / "db.npz", load_index(out).as_codes())
    assert main(["eval", "-q", str(tmp_path / "q.npz"), "--db", str(out), "-j", str(tmp_path / "a.json")]) == 0
    assert main(["eval", "-q", str(tmp_path / "q.npz"), "--db", str(tmp_path / "db.npz"),
                 "-j", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a == b and a["num_db"] == 9
