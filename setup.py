"""The checkout's root is the package `c3dhash`: its folders install as `c3dhash.cluster`, `c3dhash.eval`, ...

(setup.cfg holds the metadata; only the package mapping needs code, to list the sub-packages under the one name.)
The job configs ship as package data (`c3dhash demo` and `--config synth-cpu` work from any folder) and the
benchmarks as `c3dhash.bench` (`c3dhash bench NAME` runs from a wheel). Nothing installs a top-level
`cluster`, `distributed`, `eval`, ...: tests/test_wheel.py checks the wheel's RECORD.
"""
from setuptools import find_packages, setup

TOP = ("cluster", "distributed", "model", "loaders", "eval", "bench")
SUB = find_packages(include=[f"{t}{s}" for t in TOP for s in ("", ".*")])

setup(packages=["c3dhash", *(f"c3dhash.{p}" for p in SUB)], package_dir={"c3dhash": "."},
      package_data={"c3dhash": ["configs/*.yaml"]})
