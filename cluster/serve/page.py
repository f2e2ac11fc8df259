"""Thumbnails for the service's page: frame strips drawn as `c3dhash show` draws them (eval/index/page.py),
only of files inside the index's root.

An item's path comes from items.tsv, which a request cannot change, but the folder could still name
"../../etc/x" or a symlink out of the root: such an item gets the grey "unreadable" tile, never the file.
"""
from __future__ import annotations

from pathlib import Path

from c3dhash.eval.index.folder import VideoIndex
from c3dhash.eval.index.page import frame_strip, png_bytes


def inside_root(idx: VideoIndex, i: int) -> Path | None:
    """The file of item i when it resolves (symlinks followed) to a file under the index's root, else None."""
    root = idx.root.resolve()
    path = (root / idx.items[i].path).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def item_strip(idx: VideoIndex, i: int, *, frames: int = 4) -> bytes:
    path = inside_root(idx, i)
    return png_bytes(frame_strip(str(path) if path else None, frames=frames))


def page_html() -> bytes:
    """page.html with the mark colours of `c3dhash show` (tests count them in a screenshot)."""
    from importlib import resources

    from c3dhash.eval.index.page import MARK_COLOURS
    css = "".join(f".{k} .mark{{background:rgb{c}}}\n" for k, c in MARK_COLOURS.items())
    text = resources.files("c3dhash.cluster.serve").joinpath("page.html").read_text()
    return text.replace("/*MARKS*/", css).encode()
