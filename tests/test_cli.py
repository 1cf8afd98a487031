"""The CLI front door: version and help."""

import subprocess

from stockade import __version__
from tests.conftest import STOCKADE


def test_version_prints_the_package_version():
    out = subprocess.run([*STOCKADE, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"stockade, version {__version__}"


def test_help_lists_every_registered_command():
    from stockade.cli import COMMANDS

    out = subprocess.run([*STOCKADE, "--help"], capture_output=True, text=True, check=True)
    assert "Usage: stockade" in out.stdout
    for name in COMMANDS:
        assert f"  {name}" in out.stdout
