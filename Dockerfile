# c3dhash image for the KubeRay manifests in k8s/: Ray 2.60.0 on Python 3.11 with CUDA 12, plus this project
# installed with the pinned requirements from setup.cfg. Build and push (tag = what k8s/image names):
#   docker build -t ghcr.io/your-org/c3dhash:0.1.0-ray2.60.0 .
#   docker push ghcr.io/your-org/c3dhash:0.1.0-ray2.60.0
# "-gpu" is Ray's alias for its default CUDA 12 image (cu121), hence nvidia-dali-cuda120 in setup.cfg; keep
# the Ray version here equal to the ray pin in setup.cfg (tests/test_k8s.py checks both). torch comes from
# PyPI with its own CUDA runtime, so GPU nodes need a driver recent enough for that torch build.
FROM rayproject/ray:2.60.0-py311-gpu

# The base image runs as `ray` (uid 1000, gid 100, the user the manifests enforce); its Python environment
# under /home/ray is writable by that user, so no root step is needed.
USER 1000:100
# Created by the user itself: a WORKDIR that does not exist yet would be made root-owned, and pip writes
# its build files next to setup.cfg.
RUN mkdir -p /home/ray/c3dhash
WORKDIR /home/ray/c3dhash
ENV PYTHONUNBUFFERED=1

# Dependencies first, from setup.cfg's pins alone: editing the code does not re-download torch and DALI.
# NVIDIA's index is DALI's home (PyPI mirrors it); the CUDA 12 libraries DALI links come from the base image.
COPY --chown=1000:100 setup.cfg pyproject.toml README.md ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
print(c['options']['install_requires'])" > /tmp/requirements.txt \
 && pip install --no-cache-dir --extra-index-url https://pypi.nvidia.com -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The packages (see setup.cfg [options.packages.find]), the shipped configs and the benchmarks. Editable
# install: `c3dhash bench` finds bench/ beside the packages, as in a source checkout.
COPY --chown=1000:100 bench/ bench/
COPY --chown=1000:100 cluster/ cluster/
COPY --chown=1000:100 distributed/ distributed/
COPY --chown=1000:100 eval/ eval/
COPY --chown=1000:100 loaders/ loaders/
COPY --chown=1000:100 model/ model/
COPY --chown=1000:100 configs/ configs/
RUN pip install --no-cache-dir --no-deps -e . && c3dhash --help > /dev/null
