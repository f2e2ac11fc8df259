"""The one atomic-write helper: all or nothing, no temp file left on error, the normal file mode."""
import os
import stat

import pytest

from c3dhash.loaders.atomic import atomic_path, atomic_write, atomic_write_text, stale_temps


def test_replaces_whole_file_with_normal_mode(tmp_path):
    p = tmp_path / "sub" / "x.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask()
    assert os.listdir(p.parent) == ["x.txt"]


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_error_keeps_old_file_and_removes_temp(tmp_path, exc):
    p = tmp_path / "codes.npz"
    p.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise exc
    with pytest.raises(type(exc)):
        atomic_write(p, fail)
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["codes.npz"]


def test_temp_path_keeps_extension_and_is_found_when_stale(tmp_path):
    p = tmp_path / "v.webm"
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".webm") and tmp.name.startswith(".v.")
            tmp.write_bytes(b"x")
            leftover = tmp_path / tmp.name.replace(".v.", ".v.other", 1)
            leftover.write_bytes(b"killed writer")
            raise RuntimeError
    assert stale_temps(p) == [leftover]
    assert not p.exists()
