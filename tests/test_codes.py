"""Codes file and bit packing: layout, round trips, input kinds, atomic saves, validation of bad files.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_codes.py
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from c3dhash.eval.codes import Codes, CodesError, load_codes, pack_bits, save_codes, unpack_bits


def reference_pack(bits01: np.ndarray) -> np.ndarray:
    """Bit i -> bit i % 64 of word i // 64, written out with Python integers."""
    n, bits = bits01.shape
    out = np.zeros((n, (bits + 63) // 64), np.uint64)
    for r in range(n):
        for w in range(out.shape[1]):
            word = sum(int(bits01[r, i]) << (i - 64 * w) for i in range(64 * w, min(bits, 64 * w + 64)))
            out[r, w] = np.uint64(word)
    return out


@pytest.mark.parametrize("bits", [1, 48, 64, 65, 128, 200])
def test_pack_unpack_round_trip_and_layout(bits):
    rng = np.random.default_rng(bits)
    b = rng.integers(0, 2, (9, bits)).astype(np.uint8)
    packed = pack_bits(b)
    assert packed.dtype == np.uint64 and packed.shape == (9, (bits + 63) // 64)
    np.testing.assert_array_equal(packed, reference_pack(b))
    np.testing.assert_array_equal(unpack_bits(packed, bits), b)
    if bits % 64:  # unused high bits of the last word stay zero even when every used bit is 1
        full = pack_bits(np.ones((1, bits), np.uint8))
        assert int(full[0, -1]) == (1 << (bits % 64)) - 1


def test_input_kinds_agree():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 2, (5, 70)).astype(bool)
    expected = pack_bits(b)
    pm1 = np.where(b, 1, -1)
    tanh = np.where(b, 0.3, -0.7).astype(np.float32)
    np.testing.assert_array_equal(pack_bits(b.astype(np.int64)), expected)  # {0, 1} ints
    np.testing.assert_array_equal(pack_bits(b.astype(np.uint8)), expected)
    np.testing.assert_array_equal(pack_bits(pm1), expected)  # +-1 ints
    np.testing.assert_array_equal(pack_bits(pm1.astype(np.float64)), expected)  # +-1 floats: sign rule
    np.testing.assert_array_equal(pack_bits(tanh), expected)
    np.testing.assert_array_equal(pack_bits(b.astype(np.float32), kind="binary"), expected)
    # float 0/1 under the sign rule: 0.0 >= 0 is bit 1, which is why kind="binary" exists
    assert unpack_bits(pack_bits(np.zeros((1, 3), np.float32)), 3).tolist() == [[1, 1, 1]]
    assert unpack_bits(pack_bits(np.array([-0.5, 0.0, 2.0])), 3).tolist() == [[0, 1, 1]]  # 1-D is one code


def test_pack_rejects_ambiguous_or_broken_values():
    with pytest.raises(CodesError, match=r"\{0, 1\} or all in \{-1, \+1\}"):
        pack_bits(np.array([[-1, 0, 1]]))
    with pytest.raises(CodesError, match="kind='sign'"):
        pack_bits(np.array([[0, 2]]))
    with pytest.raises(CodesError, match="NaN"):
        pack_bits(np.array([[0.1, np.nan]]))
    with pytest.raises(CodesError, match="kind="):
        pack_bits(np.ones((1, 4)), kind="threshold")
    with pytest.raises(CodesError, match=r"\[N, bits\]"):
        pack_bits(np.ones((2, 3, 4)))


def make_codes(n: int = 7, bits: int = 48, seed: int = 0) -> Codes:
    rng = np.random.default_rng(seed)
    return Codes(pack_bits(rng.standard_normal((n, bits))), bits, rng.integers(0, 5, n),
                 [f"class{i % 3}/video_{i}.webm" for i in range(n)])


def test_save_load_round_trip(tmp_path):
    c = make_codes()
    path = save_codes(tmp_path / "sub" / "test.npz", c)
    back = load_codes(path)
    np.testing.assert_array_equal(back.codes, c.codes)
    np.testing.assert_array_equal(back.labels, c.labels)
    assert back.labels.dtype == np.int64 and back.bits == 48 and back.source == str(path)
    assert back.ids.tolist() == c.ids.tolist()
    assert sorted(p.name for p in path.parent.iterdir()) == ["test.npz"]  # no temp file left
    with np.load(path, allow_pickle=False) as z:  # the contract other tools read, without pickles
        assert z["codes"].dtype == np.uint64 and int(z["bits"]) == 48 and z["labels"].dtype == np.int64


def test_failed_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = save_codes(tmp_path / "c.npz", make_codes(seed=1))
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_codes(path, make_codes(seed=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def write_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def good_arrays(n: int = 4, bits: int = 48) -> dict:
    c = make_codes(n, bits)
    return dict(codes=c.codes, bits=np.int64(bits), labels=c.labels, ids=c.ids.astype(str))


@pytest.mark.parametrize("change, message", [
    (dict(codes=np.zeros((4, 2), np.uint64)), r"uint64 \[N, 1\] for 48 bits"),
    (dict(codes=np.zeros((4, 1), np.int64)), "must be uint64"),
    (dict(labels=np.zeros(3, np.int64)), r"'labels' must be integers \[N=4\]"),
    (dict(labels=np.zeros(4, np.float32)), "'labels' must be integers"),
    (dict(ids=np.array(["a", "b"])), r"'ids' must be strings \[N=4\]"),
    (dict(bits=np.float64(48)), "'bits' must be an integer scalar"),
    (dict(bits=np.int64(0)), "'bits' must be a positive integer"),
    (dict(codes=np.full((4, 1), 1 << 50, np.uint64)), "bits beyond bit 47 are set"),
])
def test_load_rejects_inconsistent_files(tmp_path, change, message):
    path = write_npz(tmp_path / "bad.npz", **{**good_arrays(), **change})
    with pytest.raises(CodesError, match=message) as info:
        load_codes(path)
    assert str(path) in str(info.value)


def test_load_rejects_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CodesError, match="not found"):
        load_codes(tmp_path / "nope.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(CodesError, match="corrupt"):
        load_codes(garbage)
    truncated = tmp_path / "truncated.npz"
    full = write_npz(tmp_path / "full.npz", **good_arrays(200)).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(CodesError, match=str(truncated)):
        load_codes(truncated)
    foreign = write_npz(tmp_path / "foreign.npz", weights=np.zeros(3))
    with pytest.raises(CodesError, match="missing codes, bits, labels, ids"):
        load_codes(foreign)
    pickled = tmp_path / "pickled.npz"
    arrays = good_arrays()
    arrays["ids"] = np.array([object()] * 4, dtype=object)
    write_npz(pickled, **arrays)
    with pytest.raises(CodesError, match="corrupt"):  # object arrays would need pickle: refused
        load_codes(pickled)
    assert zipfile.is_zipfile(pickled)


def test_empty_codes_file_round_trips(tmp_path):
    empty = Codes(np.zeros((0, 1), np.uint64), 16, np.zeros(0, np.int64), np.zeros(0, str))
    back = load_codes(save_codes(tmp_path / "e.npz", empty))
    assert len(back) == 0 and back.bits == 16
