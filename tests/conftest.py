"""Shared fixtures: the private test network namespace and the unprivileged (nobody) environment."""

from __future__ import annotations

import sys

import pytest

from tests.support.netns import TestNet, can_create_netns, test_network
from tests.support.rootless import RootlessEnv, build_rootless_env, rootless_unavailable

# The stockade CLI of the code under test, run with the test interpreter.
STOCKADE = [sys.executable, "-m", "stockade"]


@pytest.fixture(scope="session")
def testnet() -> TestNet:
    """A private network namespace with test addresses and its own /etc/hosts (DESIGN.md §4)."""
    reason = can_create_netns()
    if reason:
        pytest.skip(reason)
    with test_network() as net:
        yield net


@pytest.fixture(scope="session")
def rootless() -> RootlessEnv:
    """A stockade installation that nobody can run, and a HOME/state directory nobody owns."""
    reason = rootless_unavailable()
    if reason:
        pytest.skip(reason)
    return build_rootless_env()
