"""The container image (Dockerfile, .dockerignore) that the k8s/ manifests run: Ray and Python versions equal
to the pins, one CUDA major with torch and DALI, NVDEC's driver capability, the project installed as non-root.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_k8s_image.py
"""
from __future__ import annotations

import re
import sys

import pytest

from k8s_helpers import REPO, dockerfile_instructions, dockerignore_excludes, read_dockerignore, setup_cfg_packages, \
    setup_cfg_pins

pytestmark = pytest.mark.k8s

RAY_PIN = setup_cfg_pins()["ray"]
# Ray's "-gpu" image tag is an alias of its default CUDA platform, cu12.1.1 (ray ci/ray_ci/docker_container.py
# GPU_PLATFORM); an explicit -cuXY tag names the CUDA version itself (cu13.0.0-cudnn -> -cu130).
RAY_GPU_ALIAS_CUDA_MAJOR = 12


def test_dockerfile_base_image_matches_the_pins():
    froms = [args for instr, args in dockerfile_instructions(REPO / "Dockerfile") if instr == "FROM"]
    assert len(froms) == 1
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu(\d\d)\d*)", froms[0])
    assert m, froms[0]
    assert m.group(1) == RAY_PIN
    assert (int(m.group(2)), int(m.group(3))) == sys.version_info[:2], "image Python = the tested Python"
    cuda = RAY_GPU_ALIAS_CUDA_MAJOR if m.group(4) == "gpu" else int(m.group(5))
    (dali,) = [p for p in setup_cfg_pins() if p.startswith("nvidia-dali-cuda")]
    assert int(dali.removeprefix("nvidia-dali-cuda")[:-1]) == cuda, f"{dali} vs CUDA {cuda} image"
    import torch

    if torch.version.cuda:  # the pinned torch as installed here (+cu130): its CUDA major is the image's too
        assert int(torch.version.cuda.split(".")[0]) == cuda, f"torch {torch.__version__} vs CUDA {cuda} image"


def test_dockerfile_mounts_nvdec_and_names_one_cuda_major():
    steps = dockerfile_instructions(REPO / "Dockerfile")
    envs = " ".join(a for i, a in steps if i == "ENV")
    assert re.search(r"NVIDIA_DRIVER_CAPABILITIES=compute,video,utility(\s|$)", envs)
    text = (REPO / "Dockerfile").read_text()
    assert "CUDA 12" not in text and "cuda120" not in text, "one CUDA major (13) in the image"


def test_dockerfile_installs_the_project_with_its_pins_as_non_root():
    steps = dockerfile_instructions(REPO / "Dockerfile")
    runs = " ".join(a for i, a in steps if i == "RUN")
    copied = [a.split()[-2].rstrip("/") for i, a in steps if i == "COPY"]
    assert re.search(r"pip install [^&]*-c constraints.txt '\.\[dali\]'", runs) and "configparser" not in runs
    assert re.search(r"pip install [^&]*--no-deps (-e )?\.(\s|$)", runs)
    assert set(setup_cfg_packages()) <= set(copied), "every package of setup.cfg is copied"
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    ignore = read_dockerignore(REPO / ".dockerignore")
    sources = [s for i, a in steps if i == "COPY" for s in a.split()[:-1] if not s.startswith("--")]
    paths = [s.rstrip("/") + ("/x.py" if s.endswith("/") else "") for s in sources]
    assert "setup.cfg" in paths and not [p for p in paths if dockerignore_excludes(ignore, p)]
    junk = (".venv/lib/x.py", ".git/HEAD", "data/synth/a.webm", "runs/x/ckpt.pt", "cluster/__pycache__/a.pyc")
    for path in junk:
        assert dockerignore_excludes(ignore, path), path
