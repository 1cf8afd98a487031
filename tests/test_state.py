"""Sandbox names and the run lock (stockade/state.py)."""

from __future__ import annotations

import pytest

from stockade import state
from stockade.errors import StockadeError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    return tmp_path


def test_generated_names_are_valid_and_varied(home):
    names = {state.generate_name() for _ in range(200)}
    assert all(state.NAME_PATTERN.fullmatch(n) and n.count("-") == 1 for n in names)
    assert len(names) > 100  # 900 combinations: 200 draws give well over 100 distinct ones


def test_the_fallback_name_when_every_readable_name_is_taken(home, monkeypatch):
    monkeypatch.setattr(state, "_pick", lambda words: words[0])
    first = state.generate_name()
    lock = state.RunLock(first)
    try:
        other = state.generate_name()
        assert other != first and state.NAME_PATTERN.fullmatch(other)
        assert other.startswith("sandbox-") and len(other) == len("sandbox-") + 6
    finally:
        lock.release()


def test_a_second_run_lock_on_a_name_is_refused(home):
    lock = state.RunLock("dup")
    try:
        assert state.is_running("dup")
        with pytest.raises(StockadeError, match="already running"):
            state.RunLock("dup")
    finally:
        lock.release()
    assert not state.is_running("dup")


@pytest.mark.parametrize("bad", ["", "Upper", "-lead", "a/b", "x" * 49, "../etc"])
def test_invalid_names_are_refused(bad):
    with pytest.raises(StockadeError, match="invalid sandbox name"):
        state.validate_name(bad)
