"""Every `c3dhash ...` line in a command block of the README and docs/ names a real subcommand and real flags
(the ones `c3dhash X --help` lists), and every relative link points at a file that exists.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_docs.py

The parser is built once, in process (c3dhash.cluster.cli.build_parser); a `--` ends a command's flags (what
follows, e.g. `c3dhash job submit -- c3dhash train ...`, is checked as a command of its own).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from c3dhash.cluster.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|console)?\n(.*?)^```", re.S | re.M)
FLAG = re.compile(r"^\[?(--[a-z][a-z0-9-]*)")
# `c3dhash` is a command at the start of a line or after these (not `pip install c3dhash`, `kubectl -n c3dhash`)
COMMAND_AFTER = ("&&", "||", ";", "|", "--", "$(", "time", "then", "do")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands(page: Path) -> list[tuple[int, list[str]]]:
    """(line number, tokens after `c3dhash`) of each command in the page's code blocks."""
    text, out = page.read_text(), []
    for block in BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        joined = re.sub(r"\\\n", " ", block.group(1))
        for offset, line in enumerate(joined.splitlines()):
            line = re.sub(r"(^|\s)#.*", "", line)  # comments
            tokens = line.replace("'", " ").replace('"', " ").split()
            starts = [i for i, t in enumerate(tokens) if (t == "c3dhash" or t.endswith("/bin/c3dhash"))
                      and (i == 0 or tokens[i - 1] in COMMAND_AFTER)]
            for a, b in zip(starts, [*starts[1:], len(tokens)]):
                out.append((first + offset, tokens[a + 1:b]))
    return out


def problems(parser: argparse.ArgumentParser, tokens: list[str]) -> list[str]:
    path, p = [], parser
    while tokens and subparsers(p).get(tokens[0]) is not None:
        p = subparsers(p)[tokens[0]]
        path.append(tokens.pop(0))
    if subparsers(p) and not (tokens and tokens[0].startswith("-")):
        return [f"`c3dhash {' '.join(path)}` needs a subcommand, one of {', '.join(subparsers(p))}: got {tokens[:1]}"]
    known = {s for a in p._actions for s in a.option_strings}
    flags = []
    for t in tokens:
        if t == "--":
            break
        m = FLAG.match(t)
        if m:
            flags.append(m.group(1).split("=")[0])
    return [f"`c3dhash {' '.join(path)}` has no flag {f}" for f in flags if f not in known]


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_command_blocks_name_real_subcommands_and_flags(parser, page):
    found = [f"{page.name}:{n}: {msg}" for n, tokens in commands(page) for msg in problems(parser, list(tokens))]
    assert found == []


def test_the_check_sees_the_readme_commands_and_catches_a_wrong_flag(parser):
    cmds = [tokens for _, tokens in commands(REPO / "README.md")]
    assert {c[0] for c in cmds if c} >= {"train", "encode", "eval", "index", "search", "job"}
    assert problems(parser, ["train", "--config", "x.yaml", "--no-such-flag"]) == [
        "`c3dhash train` has no flag --no-such-flag"]
    assert problems(parser, ["job", "submit", "--wait", "--", "ray", "--anything"]) == []
    assert [c[:1] for c in cmds if c[:1] == ["."]] == []  # `docker build -t c3dhash .` is no command


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_files(page):
    links = re.findall(r"\]\((?!https?:|mailto:|#)([^)#\s]+)", page.read_text())
    missing = [link for link in links if not (page.parent / link).exists()]
    assert missing == []


def test_readme_reads_in_15_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300
