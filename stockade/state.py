"""The state directory: where running and recent sandboxes are registered.

Layout (all private to the user, mode 0700):

    $XDG_STATE_HOME/stockade/            (default ~/.local/state/stockade)
        stockade.db                      the SQLite store (events, revisions, proposals, routes)
        sandboxes/<name>/lock            held (flock) by the supervisor while the sandbox runs
        sandboxes/<name>/control.sock    the sandbox's control socket (mode 0600)

The sandbox never sees this directory: the mount view leaves it out or hides it under a tmpfs.
"""

from __future__ import annotations

import fcntl
import os
import re

from .errors import StockadeError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")

_ADJECTIVES = (
    "amber", "brave", "calm", "clever", "crisp", "daring", "eager", "fuzzy", "gentle", "glad",
    "hardy", "jolly", "keen", "lively", "lucky", "merry", "mellow", "nimble", "plucky", "proud",
    "quick", "quiet", "rapid", "sturdy", "sunny", "swift", "tidy", "vivid", "witty", "zesty",
)
_NOUNS = (
    "badger", "beaver", "bison", "cobra", "condor", "coyote", "falcon", "ferret", "gecko", "heron",
    "ibis", "jackal", "koala", "lemur", "lynx", "marten", "moose", "newt", "ocelot", "otter",
    "panda", "puffin", "quail", "raven", "salmon", "tapir", "walrus", "wombat", "yak", "zebra",
)


# Paths are plain strings: pathlib (with urllib.parse and fnmatch) is ~5 ms of imports on the
# critical path of `stockade run`, which reads this module before it can start the sandbox.

def state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    path = os.path.join(base, "stockade")
    _ensure_private_dir(path)
    return path


def db_path() -> str:
    return os.path.join(state_dir(), "stockade.db")


def sandbox_dir(name: str) -> str:
    path = os.path.join(state_dir(), "sandboxes", validate_name(name))
    _ensure_private_dir(path)
    return path


def control_socket_path(name: str) -> str:
    return os.path.join(sandbox_dir(name), "control.sock")


def validate_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise StockadeError(
            f"invalid sandbox name {name!r}",
            hint="use 1-48 characters: lower-case letters, digits, '-' and '_', starting with a letter or digit",
        )
    return name


def generate_name() -> str:
    """A readable name (`brave-otter`) not used by a running sandbox."""
    for _ in range(100):
        name = f"{_pick(_ADJECTIVES)}-{_pick(_NOUNS)}"
        if not is_running(name):
            return name
    return f"sandbox-{os.urandom(3).hex()}"


def _pick(words: tuple[str, ...]) -> str:
    """A random word (os.urandom: `secrets` costs ~8 ms of imports on a small machine)."""
    return words[int.from_bytes(os.urandom(2), "big") % len(words)]


def running_names() -> list[str]:
    try:
        entries = os.listdir(os.path.join(state_dir(), "sandboxes"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in entries if NAME_PATTERN.fullmatch(n) and is_running(n))


def is_running(name: str) -> bool:
    lock = os.path.join(state_dir(), "sandboxes", name, "lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class RunLock:
    """Held by a supervisor for the life of its sandbox; a second one with the same name fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        path = os.path.join(sandbox_dir(name), "lock")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StockadeError(
                f"a sandbox named {name!r} is already running",
                hint="choose another --name, or stop that one first",
            ) from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _ensure_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        raise StockadeError(f"state directory {path} is owned by uid {st.st_uid}, not by you")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
