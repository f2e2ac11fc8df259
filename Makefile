# Two commands do everything on a fresh machine:
#   make demo   # set up .venv, then synth -> train -> encode -> eval on a local Ray cluster (CPU)
#   make test   # set up .venv, then run the whole test suite (prints the 15 slowest tests)
# and, while working: make test-fast (unit and kernel equality tests, < 2 min on 2 cores; markers in setup.cfg)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE := disabled

.PHONY: setup demo test test-fast lint commit-msgs bench clean browser

setup: $(STAMP)

# Re-installs only when the package metadata or the pins changed; torch/torchvision come from the machine's wheel
# cache. constraints.txt pins the exact tested set inside setup.cfg's ranges (the Dockerfile uses it too).
$(STAMP): setup.cfg setup.py pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# DALI follows torch's CUDA major (13): drop the CUDA 12 build an older checkout installed (both own nvidia/dali)
	$(PY) -m pip uninstall -q -y nvidia-dali-cuda120 2>/dev/null || true
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench,dali]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/c3dhash demo

# Two pytest-xdist workers, a test file to each (module fixtures share a Ray cluster or a run within a file); the
# heavy files go out first (tests/conftest.py HEAVY_FIRST). Most of a serial run's wall is waiting on Ray start-ups
# and subprocesses: a second worker fills it (issue 36).
test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15 -n 2 --dist loadfile

FAST := not (ray or subprocess or browser or slow)
# -n 2 here too: 233 s wall against 434 s serial (issue 36; 2 shared cores, load 3.7-8.4)
test-fast: $(STAMP)
	$(PY) -m pytest -q --durations=10 -n 2 --dist loadfile -m "$(FAST)"

# Headless Chromium for the page tests (results page, TensorBoard's PR curves); they skip without it.
# Idempotent, and never fatal: without apt (or root) the tests that need a browser are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium not installed (no apt?): the browser tests will be skipped"

lint: $(STAMP) commit-msgs
	$(VENV)/bin/flake8 cluster distributed model loaders eval tests bench __init__.py setup.py

# Commit subjects of at most 72 characters, figures and reasons in the body; checked on the commits after
# COMMIT_BASE (the last commit before the rule). Skipped outside a git checkout.
COMMIT_BASE := e0dae16
commit-msgs:
	@if git rev-parse --verify -q $(COMMIT_BASE)^{commit} >/dev/null 2>&1; then \
		git log --no-merges --format=%s $(COMMIT_BASE)..HEAD | awk 'length > 72 { \
			print "commit subject of " length " characters (at most 72; move the rest to the body): " $$0; bad = 1 } \
			END { exit bad }'; fi

bench: $(STAMP)
	$(VENV)/bin/c3dhash bench --help

clean:
	rm -rf $(VENV) runs data/synth
