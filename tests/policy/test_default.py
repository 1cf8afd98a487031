"""The built-in default policy: default.yaml, and the prebuilt copy `stockade run` uses."""

import subprocess
import sys
import zlib

import pytest

from stockade.policy import PolicyError, load_policy_text
from stockade.policy import default as default_module
from stockade.policy.default import DEFAULT_SOURCE, default_policy, default_policy_text


def test_the_prebuilt_copy_is_made_from_the_shipped_default_yaml():
    data = default_policy_text().encode()
    assert default_module.prebuilt_applies(default_policy_text()), (
        "default.yaml changed: update stockade/policy/default.py (_prebuilt() from the loader's result, "
        f"PREBUILT_TEXT_LENGTH = {len(data)}, PREBUILT_TEXT_CRC32 = {zlib.crc32(data):#010x})")


def test_the_prebuilt_copy_is_what_the_loader_makes_of_default_yaml():
    loaded = load_policy_text(default_policy_text(), DEFAULT_SOURCE)
    prebuilt = default_policy()
    assert prebuilt == loaded
    assert repr(prebuilt) == repr(loaded)  # the same types too (tuples, mappingproxy, enums)
    assert prebuilt.source == loaded.source == DEFAULT_SOURCE


def test_any_other_text_goes_through_the_loader(monkeypatch):
    edited = default_policy_text().replace("    - /opt\n", "    - /opt\n    - /srv\n")
    assert edited != default_policy_text()
    monkeypatch.setattr(default_module, "default_policy_text", lambda: edited)
    assert "/srv" in default_policy().filesystem.read_only
    monkeypatch.setattr(default_module, "default_policy_text", lambda: edited + "landlock: {compatibility: sometimes}\n")
    with pytest.raises(PolicyError):
        default_policy()


def test_the_default_policy_needs_no_yaml_parser():
    code = ("import sys, stockade.policy.default as d; d.default_policy(); "
            "print(sorted(m for m in sys.modules if m == 'yaml' or m.startswith('stockade.policy.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["stockade.policy.default", "stockade.policy.model"]
