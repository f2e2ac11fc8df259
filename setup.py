"""The checkout's root is the package `c3dhash`: its folders install as `c3dhash.cluster`, `c3dhash.eval`, ...

(setup.cfg holds the metadata; only the package mapping needs code, to list the sub-packages under the one name.)
The job configs ship as package data (`c3dhash demo` and `--config synth-cpu` work from any folder) and the
benchmarks as `c3dhash.bench` (`c3dhash bench NAME` runs from a wheel). Nothing installs a top-level
`cluster`, `distributed`, `eval`, ...: tests/test_wheel.py checks the wheel's RECORD.
"""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

TOP = ("cluster", "distributed", "model", "loaders", "eval", "bench")
SUB = find_packages(include=[f"{t}{s}" for t in TOP for s in ("", ".*")])


class BuildPy(build_py):
    """The root is the package, so this file sits in it too: keep it out (`import c3dhash.setup` would run it)."""

    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if m[:2] != ("c3dhash", "setup")]


setup(packages=["c3dhash", *(f"c3dhash.{p}" for p in SUB)], package_dir={"c3dhash": "."},
      package_data={"c3dhash": ["configs/*.yaml"]}, cmdclass={"build_py": BuildPy})
