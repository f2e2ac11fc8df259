"""Binary codes: bit packing and the `.npz` codes file every other part reads and writes.

    codes = Codes(codes=pack_bits(tanh_outputs), bits=48, labels=labels, ids=ids)
    save_codes("runs/x/test.npz", codes)          # atomic: a temp file renamed into place
    q = load_codes("runs/x/test.npz")             # validates everything, errors name the file

File format (numpy `.npz`, no pickles):
    codes   uint64 [N, ceil(bits / 64)]   bit i of a code is bit i % 64 (LSB first) of word i // 64;
                                          the unused high bits of the last word are zero
    bits    int scalar
    labels  int64 [N]
    ids     str [N]                       e.g. the video path relative to the dataset root
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from c3dhash.loaders.atomic import atomic_write

KINDS = ("auto", "sign", "binary")


class CodesError(ValueError):
    """A codes file or array problem the user can fix; the message names the file and what to do."""


def num_words(bits: int) -> int:
    return (bits + 63) // 64


def _as_numpy(x: Any) -> np.ndarray:
    # torch tensors without importing torch: detach, move to CPU, widen bf16/half (numpy has no bf16).
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _to_bits(x: np.ndarray, kind: str) -> np.ndarray:
    """Boolean [N, bits] from network outputs (`sign`) or 0/1 or +-1 arrays (`binary`)."""
    if kind not in KINDS:
        raise CodesError(f"pack_bits: kind={kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "sign" if np.issubdtype(x.dtype, np.floating) else "binary"
    if kind == "sign":  # the seed's quantisation, with an exact 0 mapped to bit 1 (not left at 0)
        if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
            raise CodesError("pack_bits: NaN in the network outputs; the model diverged (check lr / loss)")
        return x >= 0
    if x.dtype == np.bool_:
        return x
    if not np.issubdtype(x.dtype, np.number):
        raise CodesError(f"pack_bits: cannot pack dtype {x.dtype}; pass floats, bools or 0/1 / +-1 integers")
    has_neg, has_zero = bool((x < 0).any()), bool((x == 0).any())
    if has_neg and has_zero or not np.isin(x, (-1, 0, 1)).all():
        raise CodesError("pack_bits(kind='binary'): values must be all in {0, 1} or all in {-1, +1}; "
                         "for real-valued outputs use kind='sign' (bit = x >= 0)")
    return x > 0  # 1 -> bit 1 for both {0,1} and {-1,+1}


def pack_bits(x: Any, *, kind: str = "auto") -> np.ndarray:
    """Pack [N, bits] (or [bits]) values into uint64 [N, ceil(bits/64)] words: bit i -> word i//64, bit i%64.

    kind="sign":   bit = x >= 0 (tanh outputs, +-1 floats or ints).
    kind="binary": values all in {0, 1} or all in {-1, +1} (bool, integer or float dtype); bit = x > 0.
    kind="auto":   floating dtypes -> "sign"; bool and integer dtypes -> "binary". So float 0.0/1.0 arrays
                   need kind="binary" explicitly (under "sign" every 0.0 would become bit 1).
    """
    arr = _as_numpy(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise CodesError(f"pack_bits: expected shape [N, bits] with bits >= 1, got {arr.shape}")
    b = _to_bits(arr, kind)
    n, bits = b.shape
    words = num_words(bits)
    padded = np.zeros((n, words * 64), dtype=np.uint8)
    padded[:, :bits] = b
    packed = np.packbits(padded.reshape(n, words, 64), axis=-1, bitorder="little")  # [N, W, 8] bytes
    return np.ascontiguousarray(packed).view("<u8").reshape(n, words).astype(np.uint64, copy=False)


def unpack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of `pack_bits`: uint8 [N, bits] of 0/1."""
    c = np.ascontiguousarray(np.asarray(codes, dtype=np.uint64))
    if c.ndim != 2 or c.shape[1] != num_words(bits):
        raise CodesError(f"unpack_bits: expected [N, {num_words(bits)}] words for {bits} bits, got {c.shape}")
    raw = c.astype("<u8", copy=False).view(np.uint8).reshape(c.shape[0], -1)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, :bits]


@dataclass(eq=False)
class Codes:
    """Packed codes with labels and ids; `source` (the file they came from) only improves error messages."""
    codes: np.ndarray
    bits: int
    labels: np.ndarray
    ids: np.ndarray
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.codes = np.ascontiguousarray(self.codes)
        self.labels = np.asarray(self.labels)
        self.ids = np.asarray(self.ids)
        check_codes(self, self.source or "Codes")
        self.labels = self.labels.astype(np.int64, copy=False)
        self.ids = self.ids.astype(str, copy=False)

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def check_code_array(codes: np.ndarray, bits: int, where: str, *, fix: str) -> None:
    """uint64 [N, ceil(bits/64)] with the unused high bits zero (a file written with other `bits` has them set);
    CodesError naming `where` and `fix` otherwise. Reads the last word of every code (memory-mapped is fine)."""
    words = num_words(bits)
    if codes.dtype != np.uint64 or codes.ndim != 2 or codes.shape[1] != words:
        raise CodesError(f"{where}: 'codes' must be uint64 [N, {words}] for {bits} bits, got "
                         f"{codes.dtype} {list(codes.shape)}; {fix}")
    if bits % 64 and codes.shape[0] and (np.asarray(codes[:, -1]) >> np.uint64(bits % 64)).any():
        raise CodesError(f"{where}: bits beyond bit {bits - 1} are set in 'codes' (they must be zero); "
                         f"was it written with a different 'bits'? {fix}")


def check_codes(c: Codes, where: str) -> None:
    """Validate shapes, dtypes and the zero padding bits; raise CodesError naming `where`."""
    if isinstance(c.bits, (bool, np.bool_)) or not isinstance(c.bits, (int, np.integer)) or c.bits < 1:
        raise CodesError(f"{where}: 'bits' must be a positive integer, got {c.bits!r}")
    check_code_array(c.codes, int(c.bits), where, fix="pack with eval.codes.pack_bits")
    n = c.codes.shape[0]
    if c.labels.ndim != 1 or len(c.labels) != n or not np.issubdtype(c.labels.dtype, np.integer):
        raise CodesError(f"{where}: 'labels' must be integers [N={n}], got {c.labels.dtype} "
                         f"{list(c.labels.shape)}")
    if c.ids.ndim != 1 or len(c.ids) != n or c.ids.dtype.kind not in "UO" and n:
        raise CodesError(f"{where}: 'ids' must be strings [N={n}], got {c.ids.dtype} {list(c.ids.shape)}")


def check_pair(q: Any, db: Any, what: str = "query/database") -> tuple[np.ndarray, np.ndarray]:
    """Raw query and database code arrays: both uint64 [*, W] with the same W and a non-empty database.
    Returns C-contiguous versions (copies only where needed) for the kernels."""
    q, db = np.asarray(q), np.asarray(db)
    for name, a in (("query", q), ("database", db)):
        if a.dtype != np.uint64 or a.ndim != 2:
            raise CodesError(f"{what}: {name} codes must be uint64 [N, words], got {a.dtype} {list(a.shape)}")
    if q.shape[1] != db.shape[1]:
        raise CodesError(f"{what}: query codes have {q.shape[1]} words per code but the database has "
                         f"{db.shape[1]}; encode both with the same number of bits")
    if db.shape[0] == 0:
        raise CodesError(f"{what}: the database is empty; encode a non-empty split")
    return np.ascontiguousarray(q), np.ascontiguousarray(db)


def check_query_db(query: Codes, db: Codes) -> None:
    """Query and database Codes fit together: same bits, both non-empty; errors name the files."""
    qn, dn = query.source or "query codes", db.source or "database codes"
    if query.bits != db.bits:
        raise CodesError(f"{qn} has {query.bits}-bit codes but {dn} has {db.bits}-bit codes; "
                         f"encode both with the same model")
    if len(db) == 0:
        raise CodesError(f"{dn}: the database is empty; encode a non-empty split")
    if len(query) == 0:
        raise CodesError(f"{qn}: no query codes; encode a non-empty split")


def save_codes(path: str | Path, codes: Codes) -> Path:
    check_codes(codes, str(path))
    ids = codes.ids.astype(str)  # fixed-width unicode: loads without pickle
    return atomic_write(path, lambda f: np.savez(f, codes=codes.codes, bits=np.int64(codes.bits),
                                                 labels=codes.labels.astype(np.int64), ids=ids))


def load_codes(path: str | Path) -> Codes:
    p = Path(path)
    if not p.is_file():
        raise CodesError(f"{p}: codes file not found; create it with `c3dhash encode`")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("codes", "bits", "labels", "ids") if k not in z.files]
            if missing:
                raise CodesError(f"{p}: not a codes file, missing {', '.join(missing)} "
                                 f"(has {', '.join(z.files) or 'nothing'}); re-create it with "
                                 f"`c3dhash encode`")
            arrays = {k: z[k] for k in ("codes", "bits", "labels", "ids")}
    except CodesError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CodesError(f"{p}: unreadable or corrupt .npz ({type(exc).__name__}: {exc}); "
                         f"re-create it with `c3dhash encode`") from exc
    bits = arrays["bits"]
    if bits.shape != () or not np.issubdtype(bits.dtype, np.integer):
        raise CodesError(f"{p}: 'bits' must be an integer scalar, got {bits.dtype} {list(bits.shape)}")
    return Codes(codes=arrays["codes"], bits=int(bits), labels=arrays["labels"], ids=arrays["ids"],
                 source=str(p))
