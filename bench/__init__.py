"""Benchmarks, shipped in the wheel as `c3dhash.bench`: run them with `c3dhash bench NAME`."""
