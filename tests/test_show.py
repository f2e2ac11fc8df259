"""`c3dhash show`: a static results page and a PNG contact sheet, checked in the pixels of a headless Chromium
screenshot (one mark per tile: blue query, green same label, red other label) and of the contact sheet."""
import numpy as np
import pytest
from PIL import Image

from browser import colour_blobs, needs_chromium, screenshot
from c3dhash.cluster.cli import main
from c3dhash.eval.codes import Codes, pack_bits, save_codes
from c3dhash.eval.index.folder import load_index
from c3dhash.eval.index.page import MARK_COLOURS
from c3dhash.bench.tiny_retrieval import lsh_checkpoint, make_videos

pytestmark = pytest.mark.slow  # model encoding of real videos, end to end

TOP = 4


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_videos(root)  # 3 classes x 3: the top 4 of a video = its 3 classmates + 1 other
    ckpt = lsh_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", root)
    tmp = tmp_path_factory.mktemp("show")
    assert main(["index", "--checkpoint", str(ckpt), "--videos", str(root), "--out", str(tmp / "idx")]) == 0
    queries = [root / "class0/c0_v00.webm", root / "class2/c2_v01.webm"]
    out = tmp / "results.html"
    assert main(["show", "--index", str(tmp / "idx"), "--video", *map(str, queries), "--top", str(TOP),
                 "--out", str(out)]) == 0
    return tmp, out


def test_page_and_contact_sheet_are_written_whole(page):
    tmp, out = page
    text = out.read_text()
    assert text.count('class="tile query"') == 2 and text.count('class="tile same"') == 6
    assert text.count('class="tile diff"') == 2 and "d=0" in text and "data:image/png;base64," in text
    assert out.with_suffix(".png").is_file() and not [p for p in tmp.iterdir() if p.name.startswith(".")]


def test_contact_sheet_pixels_hold_one_framed_strip_per_tile(page):
    _, out = page
    img = np.asarray(Image.open(out.with_suffix(".png")).convert("RGB")).astype(np.int16)
    frames = {k: colour_blobs(img, MARK_COLOURS[k], tol=0, min_pixels=100) for k in ("query", "same", "diff")}
    assert [len(frames[k]) for k in ("query", "same", "diff")] == [2, 6, 2]


@needs_chromium
def test_the_page_in_chromium_shows_every_tile_with_its_mark(page, tmp_path):
    _, out = page
    shot = screenshot(out.as_uri(), tmp_path / "shot.png", size=(1400, 900), wait_ms=3000)
    marks = {k: colour_blobs(shot, MARK_COLOURS[k], min_pixels=150) for k in ("query", "same", "diff")}
    assert [len(marks[k]) for k in ("query", "same", "diff")] == [2, 6, 2]
    for blobs in marks.values():  # each a 16 x 16 square, not a stray pixel run
        assert all(12 <= x1 - x0 + 1 <= 20 and 12 <= y1 - y0 + 1 <= 20 for _, x0, y0, x1, y1 in blobs)
    rows = sorted({y0 // 40 for _, _, y0, _, _ in marks["query"]})
    assert len(rows) == 2  # the two queries start two rows


def test_show_from_a_codes_file_marks_by_label(page, tmp_path):
    tmp, _ = page
    idx = load_index(tmp / "idx")
    q = Codes(codes=pack_bits(np.zeros((1, idx.bits)) - 1), bits=idx.bits, labels=[1], ids=["not/there.webm"])
    save_codes(tmp_path / "q.npz", q)
    out = tmp_path / "r.html"
    assert main(["show", "--index", str(tmp / "idx"), "--query", str(tmp_path / "q.npz"), "--top", "9",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count('class="tile same"') == 3 and text.count('class="tile diff"') == 6
