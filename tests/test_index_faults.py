"""An index under faults (issue 33): every reader refuses a corrupt index in one line with exit 2, two concurrent
`index --add` keep both runs' videos, and a write that cannot succeed is refused before the work (or ends in
one line with the old index intact)."""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from c3dhash.cluster.cli import main
from c3dhash.eval.codes import CodesError, save_codes
from c3dhash.eval.index.folder import load_index
from c3dhash.eval.search.sharded import open_codes
from c3dhash.loaders.manifest import VideoRecord, write_manifest
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_videos(root, classes=2, per_class=2)
    ckpt = lsh_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", root, bits=48)
    out = tmp_path_factory.mktemp("idx") / "lib.index"
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(root), "--out", str(out)]) == 0
    query = tmp_path_factory.mktemp("q") / "q.npz"
    save_codes(query, load_index(out).as_codes())
    return root, ckpt, out, query


def _meta(key, value):
    def corrupt(ix: Path):
        meta = json.loads((ix / "meta.json").read_text())
        meta[key] = value
        (ix / "meta.json").write_text(json.dumps(meta))
    return corrupt


def _bits_everywhere(bits):
    def corrupt(ix: Path):
        meta = json.loads((ix / "meta.json").read_text())
        meta["bits"] = meta["model"]["bits"] = bits
        (ix / "meta.json").write_text(json.dumps(meta))
    return corrupt


def _high_bits(ix: Path):
    codes = np.load(ix / "codes.npy")
    codes[1, 0] |= np.uint64(1 << 50)
    np.save(ix / "codes.npy", codes)


def _npz(ix: Path):
    codes = np.load(ix / "codes.npy")
    with open(ix / "codes.npy", "wb") as f:
        np.savez(f, codes=codes)


def _traversal(ix: Path):
    lines = (ix / "items.tsv").read_text().splitlines()
    lines[2] = "../../../../etc/passwd\t0\tclass0"
    (ix / "items.tsv").write_text("\n".join(lines) + "\n")


CORRUPTIONS = {  # name: (corrupt(index folder), file named, words of the message)
    "meta says 40 bits": (_meta("bits", 40), "meta.json", "'bits' is 40 but the model that built it has 48 bits"),
    "meta and card say 40": (_bits_everywhere(40), "codes.npy", "bits beyond bit 39 are set"),
    "meta says 64 bits": (_meta("bits", 64), "meta.json", "the model that built it has 48 bits"),
    "high bits set": (_high_bits, "codes.npy", "bits beyond bit 47 are set"),
    "bits a list": (_meta("bits", [48]), "meta.json", "'bits' must be a positive int"),
    "bits null": (_meta("bits", None), "meta.json", "'bits' must be a positive int"),
    "bits a string": (_meta("bits", "48"), "meta.json", "'bits' must be a positive int"),
    "meta a list": (lambda ix: (ix / "meta.json").write_text("[1, 2]"), "meta.json", "must be a JSON object"),
    "codes an npz": (_npz, "codes.npy", "an .npz archive"),
    "path traversal": (_traversal, "items.tsv", "'../../../../etc/passwd' is not inside the index root"),
    "items.tsv deleted": (lambda ix: (ix / "items.tsv").unlink(), "items.tsv", "missing"),
    "count disagrees": (_meta("count", 3), "lib.index", "they disagree"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_reader_refuses_a_corrupt_index_in_one_line(lib, tmp_path, capsys, name):
    root, _, out, query = lib
    corrupt, named, words = CORRUPTIONS[name]
    ix = tmp_path / "lib.index"
    shutil.copytree(out, ix)
    corrupt(ix)
    video = str(root / "class0/c0_v00.webm")
    readers = [["search", "--index", str(ix), "--video", video], ["search", "--index", str(ix), "--query", str(query)],
               ["show", "--index", str(ix), "--query", str(query), "--out", str(tmp_path / "r.html")],
               ["eval", "--query", str(query), "--db", str(ix)]]
    for argv in readers:
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and words in lines[0], (argv, lines)
        assert "rebuild it with `c3dhash index" in lines[0] and "c3dhash splits" not in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_the_sharded_index_refuses_set_high_bits_and_an_npz(lib, tmp_path):
    _, _, out, _ = lib
    assert open_codes(out / "codes.npy", 48).shape == (4, 1)
    with pytest.raises(CodesError, match="bits beyond bit 39 are set"):
        open_codes(out / "codes.npy", 40)
    ix = tmp_path / "ix"
    shutil.copytree(out, ix)
    _npz(ix)
    with pytest.raises(CodesError, match="not a .npy array"):
        open_codes(ix / "codes.npy", 48)


@pytest.mark.subprocess
def test_two_concurrent_adds_keep_both_runs_videos(lib, tmp_path):
    root, ckpt, _, _ = lib
    videos = tmp_path / "v"
    shutil.copytree(root, videos)
    first = make_videos(videos, classes=2, per_class=1, first=2)
    second = make_videos(videos, classes=2, per_class=1, first=4)
    ix = tmp_path / "shared.index"
    old = [VideoRecord(p.relative_to(root).as_posix(), int(p.parent.name[-1]), p.parent.name)
           for p in sorted(root.rglob("*.webm"))]
    write_manifest(tmp_path / "old.tsv", old)
    assert main(["index", "--checkpoint", str(ckpt), "--manifest", str(tmp_path / "old.tsv"), "--root", str(videos),
                 "--out", str(ix)]) == 0
    procs = []
    for name, paths in (("a", first), ("b", second)):
        write_manifest(tmp_path / f"{name}.tsv", [VideoRecord(p, int(p[5]), p.split("/")[0]) for p in paths])
        cmd = [sys.executable, "-m", "c3dhash.cluster.cli", "index", "--checkpoint", str(ckpt), "--manifest",
               str(tmp_path / f"{name}.tsv"), "--root", str(videos), "--out", str(ix), "--add"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    got = sorted(r.path for r in load_index(ix).items)
    assert got == sorted([r.path for r in old] + first + second)  # the union: 4 old + 2 + 2 (before: 6 of 8)
    assert any("is being written by pid" in err for _, err in outs), outs  # the later one waited, and said so
    assert not list(tmp_path.glob(".shared.index.lock"))


def test_an_unwritable_out_is_refused_before_any_video_is_encoded(lib, tmp_path, capsys, monkeypatch):
    root, ckpt, _, _ = lib
    import c3dhash.eval.index.videos
    monkeypatch.setattr(c3dhash.eval.index.videos.ChunkEncoder, "encode",
                        lambda self, paths: pytest.fail("encoded before the output folder was checked"))
    real_touch = Path.touch

    def read_only(self, *a, **kw):
        if ".write-test." in self.name:
            raise PermissionError(errno.EROFS, "Read-only file system")
        return real_touch(self, *a, **kw)
    monkeypatch.setattr(Path, "touch", read_only)
    out = tmp_path / "ro" / "x.index"
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(root), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"--out {out}: cannot write in {tmp_path}" in lines[0], lines
    assert "Read-only file system" in lines[0] and not out.exists()


def test_a_full_disk_during_add_is_one_line_and_the_old_index_stays(lib, tmp_path, capsys, monkeypatch):
    root, ckpt, out, _ = lib
    videos = tmp_path / "v"
    shutil.copytree(root, videos)
    ix = tmp_path / "lib.index"
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(videos), "--out", str(ix)]) == 0
    before = {p.name: p.read_bytes() for p in ix.iterdir()}
    make_videos(videos, classes=2, per_class=1, first=7)
    import c3dhash.eval.index.folder as folder

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(folder, "atomic_write_text", full)
    capsys.readouterr()
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(videos), "--out", str(ix), "--add"]) == 2
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("encode:")]  # progress
    assert len(lines) == 1 and "No space left on device" in lines[0] and "the old index is intact" in lines[0]
    assert {p.name: p.read_bytes() for p in ix.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folder, no lock
