"""Fixtures, and the test tiers. A test that starts Ray (the `ray_cluster` fixture, or a cluster of
its own) is marked `ray`; `slow` trains for hundreds of steps; `faults` injects faults into real
sweeps. The quick, Ray-free tier: pytest -m "not ray and not slow and not faults"."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py, tests/reference.py


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns xdist_group into the test's group
def pytest_collection_modifyitems(items):
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()) or item.get_closest_marker("faults"):
            item.add_marker(pytest.mark.ray)
        # (jobs/local-cluster.sh's stand-in binds Ray's default ports: kept apart from the real clusters)
        if item.get_closest_marker("ray") or item.module.__name__ == "test_local_cluster_script":
            # Under `pytest -n 2 --dist loadgroup` (the README's command) every Ray test runs on one
            # worker, in turn: one Ray cluster at a time, and no fault injected beside another sweep,
            # while the other worker runs the Ray-free tests on the core the sweeps leave idle.
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session (ray.init takes seconds). address="local":
    always a fresh cluster of our own, even when `ray start` left one running on this machine."""
    ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
