"""isolation/gcpause.py: the collector is paused while a sandbox starts, then resumed with what
exists frozen; resuming without a pause changes nothing (the API in a test process)."""

import subprocess
import sys


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_pause_then_resume_freezes_what_exists_and_collects_again():
    out = _fresh(
        "import gc\n"
        "from stockade.isolation import gcpause\n"
        "gcpause.pause()\n"
        "print(gc.isenabled())\n"
        "junk = [[] for _ in range(1000)]\n"
        "gcpause.resume()\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 1000)\n"
        "gcpause.resume()  # once only\n"
        "print(gc.isenabled())\n")
    assert out.split("\n") == ["False", "True True", "True"]


def test_resume_without_pause_is_a_no_op():
    out = _fresh(
        "import gc\n"
        "from stockade.isolation import gcpause\n"
        "gcpause.resume()\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n"
        "gc.disable()  # the embedding program's own choice\n"
        "gcpause.resume()\n"
        "print(gc.isenabled())\n")
    assert out.split("\n") == ["True 0", "False"]

