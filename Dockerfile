# c3dhash image for the KubeRay manifests in k8s/: Ray 2.60.0 on Python 3.11 with CUDA 13, plus this project
# installed with the pinned requirements of constraints.txt. Build and push (tag = what k8s/image names):
#   docker build -t ghcr.io/your-org/c3dhash:0.1.0-ray2.60.0 .
#   docker push ghcr.io/your-org/c3dhash:0.1.0-ray2.60.0
# One CUDA major everywhere: torch 2.14.1 is the +cu130 build and DALI is nvidia-dali-cuda130, so the base is
# Ray's CUDA 13.0 image (platform cu13.0.0-cudnn, tag suffix -cu130; Ray publishes it for Python 3.10-3.14).
# torch's wheels bring their own CUDA 13 runtime libraries and DALI links the CUDA runtime statically (its
# other libraries are -cu13 wheels), so neither takes CUDA libraries from the base; what the base adds is a CUDA 13 userspace for tools and the
# NVIDIA_REQUIRE_CUDA=cuda>=13.0 label, with which the NVIDIA container runtime refuses to start the
# container on a host driver older than CUDA 13 needs (R580) instead of torch failing later. The host needs
# driver >= 580 and a GPU of compute capability 7.5..12.0 (Turing to Blackwell; no V100/P100). Keep the Ray
# version here equal to the ray pin in constraints.txt and the CUDA major equal to DALI's (tests/test_k8s.py checks
# both). Were the -cu130 tag unavailable, rayproject/ray:2.60.0-py311-cpu should serve as well (not tried):
# torch and DALI carry their CUDA runtimes, and the NVIDIA runtime mounts the driver libraries from the host.
FROM rayproject/ray:2.60.0-py311-cu130

# DALI's NVDEC decoder loads libnvcuvid.so from the host driver; the NVIDIA container runtime mounts it only
# when the capabilities include `video` (CUDA images default to compute,utility). The k8s manifests set the
# same in the env of every decoding container, in case another image is used.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,video,utility

# The base image runs as `ray` (uid 1000, gid 100, the user the manifests enforce); its Python environment
# under /home/ray is writable by that user, so no root step is needed.
USER 1000:100
# Created by the user itself: a WORKDIR that does not exist yet would be made root-owned, and pip writes
# its build files next to setup.cfg.
RUN mkdir -p /home/ray/c3dhash
WORKDIR /home/ray/c3dhash
ENV PYTHONUNBUFFERED=1

# Dependencies first, from the metadata and constraints.txt alone: editing the code does not re-download torch
# and DALI. `.[dali]` with no code copied yet resolves exactly the package's requirements (plus the DALI extra),
# each pinned by constraints.txt (the set CI and `make` test); the empty c3dhash it installs is replaced below.
# NVIDIA's index is DALI's home (PyPI mirrors it). DALI's wheel links the CUDA runtime statically and takes
# its codec libraries from nvidia-*-cu13 wheels; torch's CUDA 13 libraries come as nvidia-* wheels too. From
# the host both need only the driver (libcuda, and libnvcuvid for NVDEC).
COPY --chown=1000:100 setup.cfg setup.py __init__.py pyproject.toml README.md constraints.txt ./
RUN pip install --no-cache-dir --extra-index-url https://pypi.nvidia.com -c constraints.txt '.[dali]' \
 && pip uninstall -y -q c3dhash

# The package (setup.py maps the folders under `c3dhash`), the shipped configs and the benchmarks. Editable
# install: `c3dhash bench` finds bench/ beside the packages, as in a source checkout.
COPY --chown=1000:100 bench/ bench/
COPY --chown=1000:100 cluster/ cluster/
COPY --chown=1000:100 distributed/ distributed/
COPY --chown=1000:100 eval/ eval/
COPY --chown=1000:100 loaders/ loaders/
COPY --chown=1000:100 model/ model/
COPY --chown=1000:100 configs/ configs/
RUN pip install --no-cache-dir --no-deps -e . && c3dhash --help > /dev/null
