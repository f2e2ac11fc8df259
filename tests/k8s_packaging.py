"""setup.cfg pins and packages, Dockerfile instructions and Docker's .dockerignore matching, read offline.

    dockerignore_excludes(read_dockerignore(REPO / ".dockerignore"), "cluster/cli.py")   # False: sent
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_cfg_pins() -> dict[str, str]:
    """The exact versions CI, make and the image install: constraints.txt (setup.cfg holds ranges)."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"\[.*\]", "", name)] = version
    return pins


def setup_cfg_packages() -> list[str]:
    """The folders setup.py installs under `c3dhash` (its TOP tuple) and the shipped configs."""
    import ast
    tree = ast.parse((REPO / "setup.py").read_text())
    (top,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and
              any(getattr(t, "id", "") == "TOP" for t in n.targets)]
    return [*ast.literal_eval(top), "configs"]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and `\\` continuations joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", "", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip()]


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rules: the last matching pattern wins; a pattern matching a directory matches inside it."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = _glob_regex(pattern.lstrip("!").strip("/"))
        parts = path.split("/")
        if any(rx.match("/".join(parts[:k])) for k in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out + r"\Z")


def read_dockerignore(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]
