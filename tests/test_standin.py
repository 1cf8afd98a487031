"""stockade/standin.py: a module replaced or hidden for the length of a block, then put back."""

import importlib
import sys
import types

import pytest

from stockade.standin import stand_in


def test_a_stand_in_replaces_the_module_and_its_package_attribute_then_goes():
    import json.decoder as real

    fake = types.ModuleType("json.decoder")
    with stand_in("json.decoder", fake):
        assert sys.modules["json.decoder"] is fake
        assert sys.modules["json"].decoder is fake
        from json import decoder
        assert decoder is fake
    assert sys.modules["json.decoder"] is real
    assert sys.modules["json"].decoder is real


def test_a_module_not_loaded_before_is_absent_afterwards_and_imports_for_real():
    name = "stockade_standin_probe"
    assert name not in sys.modules
    stand = types.ModuleType(name)
    with stand_in(name, stand):
        assert importlib.import_module(name) is stand
    assert name not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(name)  # no such module: the real import ran


def test_none_hides_a_module_for_the_block_only():
    import colorsys as real

    with stand_in("colorsys", None):
        with pytest.raises(ImportError):
            importlib.import_module("colorsys")
    assert importlib.import_module("colorsys") is real


def test_an_error_in_the_block_still_restores():
    import json.decoder as real

    with pytest.raises(RuntimeError):
        with stand_in("json.decoder", types.ModuleType("json.decoder")):
            raise RuntimeError("boom")
    assert sys.modules["json.decoder"] is real and sys.modules["json"].decoder is real


def test_what_the_block_itself_put_in_place_is_left_alone():
    """An import inside the block that replaced the entry (a real load) is not undone."""
    name = "stockade_standin_probe2"
    stand = types.ModuleType(name)
    loaded = types.ModuleType(name)
    with stand_in(name, stand):
        sys.modules[name] = loaded
    try:
        assert sys.modules[name] is loaded
    finally:
        del sys.modules[name]
