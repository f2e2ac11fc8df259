"""The CLI answers at once: `c3dhash --help`, every `c3dhash X --help` and `--version` load no heavy package."""
import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess
REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "ray", "nvidia", "numba")  # nvidia = DALI (nvidia.dali)
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# Builds the parser, asks every subcommand (and sub-subcommand) for --help, then lists what got imported.
EVERY_HELP = """
import argparse, contextlib, io, json, sys
from c3dhash.cluster.cli import build_parser, main

def commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from commands(sub, (*prefix, name))

asked = [()] + list(commands(build_parser()))
for cmd in asked:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([*cmd, "--help"])
        except SystemExit as e:
            assert e.code == 0, cmd
print(json.dumps({"asked": [" ".join(c) for c in asked], "modules": sorted(sys.modules)}))
"""


def test_every_help_imports_no_heavy_package():
    out = subprocess.run([sys.executable, "-c", EVERY_HELP], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert {"train", "eval", "check-data", "job submit", "synth", "bench"} <= set(got["asked"]), got["asked"]
    heavy = sorted(m for m in got["modules"] if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy[:20]


def test_help_via_importtime_of_the_entry_point():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "c3dhash.cluster.cli", "--help"], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage: c3dhash" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}, sorted(imported)[:20]


def test_version_prints_setup_cfg_version():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = subprocess.run([sys.executable, "-m", "c3dhash.cluster.cli", "--version"], env=ENV, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.strip() == f"c3dhash {cfg.get('metadata', 'version')}"


# Every command that reads a job config, given a bad key: it must answer (exit 2) before torch or Ray load.
BAD_CONFIG = """
import contextlib, io, json, sys
from c3dhash.cluster.cli import main

bad = ["--config", "synth-cpu", "--set", "train.no_such_key=1"]
asked = {"train": [], "demo": [], "eval": ["--checkpoint", "best"], "check-data": [],
         "encode": ["--split", "test", "-o", "o.npz"], "index": ["--checkpoint", "best", "--videos", ".", "-o", "o"],
         "export": ["--checkpoint", "best", "-o", "o"]}
codes, said = {}, {}
for cmd, extra in asked.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            codes[cmd] = main([cmd, *extra, *bad])
        except SystemExit as e:
            codes[cmd] = e.code
    said[cmd] = err.getvalue()
print(json.dumps({"codes": codes, "said": said, "modules": sorted(sys.modules)}))
"""


def test_a_config_error_answers_before_any_heavy_package_loads(tmp_path):
    out = subprocess.run([sys.executable, "-c", BAD_CONFIG], env=ENV, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert set(got["codes"].values()) == {2}, got["codes"]
    for cmd, said in got["said"].items():
        assert "no_such_key" in said and "valid keys" in said, (cmd, said)
    heavy = sorted(m for m in got["modules"] if m.split(".")[0] in HEAVY)
    assert heavy == [], heavy[:20]
    assert not list(tmp_path.iterdir())  # nothing written
