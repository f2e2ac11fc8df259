"""Hamming kernels: everything that knows a CPU's instruction set (word-major popcount scans, bit-sliced planes,
the torch path). Imports nothing from eval/ above it (only eval/codes.py)."""
