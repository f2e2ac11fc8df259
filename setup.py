"""The checkout's root is the package `c3dhash`: its folders install as `c3dhash.cluster`, `c3dhash.eval`, ...

(setup.cfg holds the metadata; only the package mapping needs code, to list the sub-packages under the one name.)
"""
from setuptools import find_packages, setup

TOP = ("cluster", "distributed", "model", "loaders", "eval")
SUB = find_packages(include=[f"{t}{s}" for t in TOP for s in ("", ".*")])

setup(packages=["c3dhash", *(f"c3dhash.{p}" for p in SUB)], package_dir={"c3dhash": "."})
