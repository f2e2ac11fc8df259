"""Dependencies (issue 32): setup.cfg holds ranges, constraints.txt pins one tested set inside them for CI,
`make` and the image; DALI is the `dali` extra, and search, eval, index reading and the page work without it."""
import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def requirements() -> dict[str, list[Requirement]]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = {"install_requires": [Requirement(x) for x in cfg["options"]["install_requires"].split("\n") if x]}
    for extra, text in cfg["options.extras_require"].items():
        out[extra] = [Requirement(x) for x in text.split("\n") if x]
    return out


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line}: pin with =="
            found[canonicalize_name(req.name)] = spec.version
    return found


def test_setup_cfg_holds_ranges_and_constraints_pin_each_inside_it():
    reqs, pinned = requirements(), pins()
    names = set()
    for group, items in reqs.items():
        for req in items:
            name = canonicalize_name(req.name)
            names.add(name)
            assert not any(s.operator in ("==", "===") for s in req.specifier), f"setup.cfg {group}: {req}: a range"
            assert req.specifier, f"setup.cfg {group}: {req}: give a range"
            assert name in pinned, f"constraints.txt lacks {req.name} (setup.cfg {group})"
            assert req.specifier.contains(pinned[name], prereleases=True), \
                f"constraints.txt {req.name}=={pinned[name]} is outside setup.cfg's {req.specifier}"
    assert set(pinned) == names, f"constraints.txt pins what setup.cfg does not require: {set(pinned) - names}"
    assert "nvidia-dali-cuda130" in {canonicalize_name(r.name) for r in reqs["dali"]}
    assert not [r for r in reqs["install_requires"] if "dali" in r.name], "DALI is the `dali` extra"


def test_make_and_the_image_install_with_the_constraints():
    make = (REPO / "Makefile").read_text()
    assert re.search(r"pip install -q -c constraints.txt -e '\.\[dev,bench,dali\]'", make)
    docker = (REPO / "Dockerfile").read_text()
    assert "-c constraints.txt '.[dali]'" in docker and "configparser" not in docker


def test_the_installed_versions_are_the_pinned_ones():
    """The venv the suite runs in was set up with constraints.txt (make setup): what it tests is what is pinned."""
    from importlib.metadata import PackageNotFoundError, version
    wrong = []
    for name, want in pins().items():
        try:
            got = version(name)
        except PackageNotFoundError:
            continue  # an extra not installed here (e.g. faiss-cpu)
        if got.split("+")[0] != want:
            wrong.append(f"{name} {got} != {want}")
    assert wrong == [], wrong


WITHOUT_DALI = """
import sys
sys.modules["nvidia.dali"] = None  # as if the extra were not installed: `import nvidia.dali` raises ImportError
from c3dhash.cluster.cli import main
import numpy as np
from c3dhash.eval.codes import Codes, pack_bits, save_codes
d = np.random.default_rng(0).integers(0, 2, (20, 16)).astype(bool)
ids = np.array([f"v{i}" for i in range(20)])
save_codes("db.npz", Codes(codes=pack_bits(d), bits=16, labels=np.arange(20) % 2, ids=ids))
assert main(["search", "-i", "db.npz", "-q", "db.npz", "-k", "3", "-j", "s.json"]) == 0
assert main(["eval", "-q", "db.npz", "--db", "db.npz", "-j", "m.json"]) == 0
import c3dhash.eval.index.folder, c3dhash.eval.index.page, c3dhash.eval.index.query
from c3dhash.loaders.probe import _decode_pipeline  # what check-data and the loaders build to decode
try:
    _decode_pipeline(batch_size=1, device="cpu", device_id=None, num_threads=1)
except ImportError as exc:
    print("DECODE:", type(exc).__module__, exc)
print("DALI loaded:", any(m.startswith("nvidia.dali.") for m in sys.modules))
"""


@pytest.mark.subprocess
def test_search_eval_and_index_reading_work_without_dali(tmp_path):
    out = subprocess.run([sys.executable, "-c", WITHOUT_DALI], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DALI loaded: False" in out.stdout
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("DECODE:")]
    assert "c3dhash.loaders.dali" in line and "pip install 'c3dhash[dali]'" in line, line
