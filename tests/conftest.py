"""Shared test setup: Ray token auth off (a stray ~/.ray/auth_token would otherwise break `ray start`)."""
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "2")
