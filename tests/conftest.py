"""Shared test setup and fixtures.

- `local_ray`: one local Ray for the whole session (started at its first use, 127.0.0.1, 4 CPUs, no dashboard),
  for the tests that only need a Ray; yields its GCS address. A module that needs its own cluster
  (ray.cluster_utils.Cluster) shuts it down; the next user starts it again.
- `gloo`: run a function on N gloo ranks with a collective timeout (tests/gloo_helpers.py), each call in a fresh folder.
Builders (codes, tiny datasets, trainers) live in the *_helpers.py modules, not here and not in test modules.
Tiers (markers in setup.cfg): a test that uses `local_ray` is marked `ray`, one that uses `gloo` `slow`, here;
the rest mark themselves (module-level `pytestmark` or per test).
"""
import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a stray ~/.ray/auth_token would otherwise break `ray start`
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ["C3DHASH_BENCH_RESULTS"] = "off"  # benchmarks the tests run write no bench/results/ files

LOCAL_RAY_CPUS = 4  # the sharded index's 3 shards; 2 training workers and their controller
FIXTURE_MARKS = {"local_ray": "ray", "gloo": "slow", "svc": "ray"}  # svc: test_serve.py's service on its own Ray


# `make test` runs the files on 2 pytest-xdist workers, each file on one (--dist loadfile), handed out in collection
# order. A file's tests wait mostly on Ray start-ups and subprocesses, so the files that take minutes (issue 36:
# measured serial, heaviest first) go out first and the light ones fill the gaps; heavy files left for the end would
# leave one core idle while the other finishes them. The order inside a file is kept (module fixtures share state).
HEAVY_FIRST = ("test_failures", "test_jobs", "test_train_elastic", "test_planes_lanes", "test_serve",
               "test_serve_haproxy",
               "test_bench_recipe", "test_wheel")


def heavy_first(items: list) -> list:
    """Items reordered file by file: HEAVY_FIRST's files in that order, then the rest in collection order; stable,
    so the order inside each file stays."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    return sorted(items, key=lambda item: rank.get(item.path.stem, len(HEAVY_FIRST)))


def pytest_collection_modifyitems(items):
    items[:] = heavy_first(items)
    for item in items:
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(mark)


@pytest.fixture(scope="session")
def _session_ray():
    started = []
    yield started
    import ray
    if started and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def local_ray(_session_ray):
    import ray
    for attempt in (1, 2):
        if ray.is_initialized():  # started before, or a Cluster module shut the last one down
            break
        try:
            ray.init(address="local", num_cpus=LOCAL_RAY_CPUS, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
            _session_ray.append(True)
        except Exception as exc:  # Ray gives a node 30 s to start (fixed): an overloaded machine misses that
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def gloo(tmp_path_factory):
    """run(fn, world, *args, out_dir=None) -> [fn(rank, world, out_dir, *args) for each rank]; out_dir: a fresh
    folder unless given."""
    from gloo_helpers import run_ranks

    def run(fn, world, *args, out_dir=None, **kw):
        return run_ranks(fn, world, out_dir or tmp_path_factory.mktemp("gloo"), *args, **kw)
    return run
