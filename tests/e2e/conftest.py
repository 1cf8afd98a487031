"""End to end: `stockade run` inside the test network namespace, real clients inside the sandbox,
real upstreams beside it (DESIGN.md §4), rootless (stockade as nobody from the /var/tmp venv)
and as root (the command drops to nobody).

    upstreams (session)   HTTP/HTTPS origins (echo, git smart HTTP, a PEP 503 index) on one
                          address under several names, a name whose address refuses
                          connections, fake OpenAI and Anthropic backends
    e2e (per test)        a workspace owned by nobody (work/ is the workdir, ro/ is read-only
                          in the sandbox, state/ is XDG_STATE_HOME) and how to run `stockade`
                          there: `e2e.run(plan, rules=...)` starts a sandbox whose command is
                          the driver below, `e2e.cli(...)` runs any other stockade command in
                          the supervisor's namespaces as its user (the control socket accepts
                          nobody else)

Inside the sandbox, `driver.py` runs a plan of named steps (argv lists, or waits for a file the
test creates) and prints one JSON object {name: {rc, out, err}} at the end, so that one sandbox
serves many checks, each made by the real binary whose identity the proxy checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STOCKADE
from tests.inference.remote import NetnsBackend, start_backend
from tests.network.support.packages import make_index, make_repo
from tests.sandbox.conftest import _workspace
from tests.support.netns import NOBODY_GID, NOBODY_UID, TestNet, wait_for_port

REPO = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-route-e2e-openai-7f3a9c"
ANTHROPIC_KEY = "sk-ant-route-e2e-b41d2e"
TOKEN = "tok-e2e-real-secret-5c8e1d"  # the value behind --secret API_TOKEN
NAMES = ("origin.test", "secure.test", "api.test", "git.test", "pypi.test", "ident.test")

DRIVER = r'''
import json, os, subprocess, sys, time
out = {}
for name, step in json.load(open(sys.argv[1])):
    if isinstance(step, dict):  # {"wait": PATH}: until the test creates it (or 60 s)
        end = time.time() + 60
        while not os.path.exists(step["wait"]) and time.time() < end:
            time.sleep(0.02)
        continue
    try:
        p = subprocess.run(step, capture_output=True, text=True, timeout=90)
        out[name] = {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
    except Exception as exc:
        out[name] = {"rc": -1, "out": "", "err": repr(exc)}
    with open("progress", "a") as f:  # the test can follow the plan
        f.write(name + "\n")
print(json.dumps(out))
'''


@dataclass
class Upstreams:
    net: TestNet
    origin: str  # the address of every name in NAMES
    closed: str  # an address where nothing listens (connection refused)
    dir: Path
    upstream_ca: Path  # the origins' CA (the proxy trusts it through --upstream-ca)
    openai: NetnsBackend
    anthropic: NetnsBackend


@pytest.fixture(scope="session")
def upstreams(testnet: TestNet, tmp_path_factory) -> Upstreams:
    import trustme

    if shutil.which("curl") is None or shutil.which("git") is None:
        pytest.skip("curl and git are needed (scripts/system-deps.sh installs them)")
    work = tmp_path_factory.mktemp("e2e-upstreams")
    work.chmod(0o755)
    origin, closed = testnet.new_address(), testnet.new_address()
    for name in NAMES:
        testnet.add_host(name, origin)
    testnet.add_host("closed.test", closed)
    testnet.add_host("loopback.test", "127.0.0.1")
    testnet.add_host("metadata.test", "169.254.169.254")
    ca = trustme.CA()
    ca.issue_cert(*NAMES).private_key_and_cert_chain_pem.write_to_path(str(work / "origin.pem"))
    upstream_ca = work / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(upstream_ca))
    upstream_ca.chmod(0o644)
    make_repo(work / "git")
    make_index(work / "index")
    for extra in (["--port", "8080"],
                  ["--port", "8443", "--cert", str(work / "origin.pem"), "--key", str(work / "origin.pem"),
                   "--git-root", str(work / "git"), "--static", str(work / "index")]):
        testnet.spawn([sys.executable, "-m", "tests.network.support.servers", "--bind", origin, *extra],
                      cwd=str(REPO), stdout=subprocess.DEVNULL)
    openai = start_backend(testnet, "openai", work, expected_key=OPENAI_KEY)
    anthropic = start_backend(testnet, "anthropic", work, expected_key=ANTHROPIC_KEY)
    wait_for_port(testnet, origin, 8080)
    wait_for_port(testnet, origin, 8443)
    return Upstreams(testnet, origin, closed, work, upstream_ca, openai, anthropic)


@dataclass
class E2E:
    mode: str  # "rootless" | "root"
    net: TestNet
    up: Upstreams
    space: Path
    venv: Path  # the nobody-readable venv: stockade (rootless) and the clients
    base_env: dict[str, str]
    stockade: str  # rootless: the session's console script in that venv
    name: str = "e2e"
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.space / "work"

    @property
    def ro(self) -> Path:
        return self.space / "ro"

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    # -- files ---------------------------------------------------------------------------

    def write(self, name: str, text: str, *, mode: int = 0o644) -> Path:
        path = self.ro / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def policy(self, rules: str = "{}", *, name: str = "policy.yaml", extra_ro: tuple[str, ...] = ()) -> Path:
        """A policy: the system read-only, the workdir and /tmp writable, `rules` as
        network_policies (YAML text, indented as a mapping)."""
        ro = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/proc", "/dev/urandom", "/dev/random",
              str(self.venv), str(self.ro), *extra_ro]
        body = textwrap.indent(textwrap.dedent(rules).strip(), "  ") if rules != "{}" else None
        text = ("version: 1\nfilesystem_policy:\n  include_workdir: true\n"
                f"  read_only: [{', '.join(ro)}]\n  read_write: [/tmp, /dev/null]\n"
                "landlock: {compatibility: best_effort}\n"
                + (f"network_policies:\n{body}\n" if body else "network_policies: {}\n"))
        return self.write(name, text)

    # -- running stockade ---------------------------------------------------------------

    def argv(self, args: list[str]) -> list[str]:
        prefix = [self.stockade] if self.mode == "rootless" else list(STOCKADE)
        return self.net.command([*prefix, *args], as_nobody=self.mode == "rootless", cwd=str(self.work))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.base_env, **(extra or {})}

    def cli(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Any stockade command, where and as whom the supervisor runs."""
        return subprocess.run(self.argv(list(args)), env=self.env(env), capture_output=True, text=True,
                              timeout=timeout)

    def plan(self, steps: list[tuple[str, Any]]) -> list[str]:
        """The sandbox's command: the driver over `steps`."""
        driver = self.write("driver.py", DRIVER)
        plan = self.write(f"plan-{len(list(self.ro.iterdir()))}.json", json.dumps(steps))
        return [self.python, str(driver), str(plan)]

    def run(self, steps: list[tuple[str, Any]], *, policy: Path, args: tuple[str, ...] = (),
            env: dict[str, str] | None = None, timeout: float = 120) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
        """Run the steps in a fresh sandbox; (the driver's results, the process)."""
        done = subprocess.run(self.argv(["run", "-q", "--name", self.name, "--policy", str(policy), *args,
                                         "--", *self.plan(steps)]),
                              env=self.env(env), capture_output=True, text=True, timeout=timeout)
        try:
            results = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise AssertionError(f"the sandbox gave no results (exit {done.returncode}): {done.stderr}") from None
        return results, done

    def start(self, steps: list[tuple[str, Any]], *, policy: Path, args: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """The same in the background; returns once the control socket answers."""
        proc = subprocess.Popen(self.argv(["run", "-q", "--name", self.name, "--policy", str(policy), *args,
                                           "--", *self.plan(steps)]),
                                env=self.env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the sandbox ended early ({proc.returncode}): {proc.stderr.read()}")
            if self.control("ping").get("ok"):
                return proc
            time.sleep(0.05)
        raise AssertionError("the sandbox's control socket never answered")

    def finish(self, proc: subprocess.Popen, timeout: float = 60) -> tuple[dict[str, Any], str]:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1]), err

    def control(self, op: str, **params: Any) -> dict[str, Any]:
        """One control request from the supervisor's namespaces, as its user."""
        code = ("import json, sys\nfrom stockade import control\nfrom stockade.state import control_socket_path\n"
                "try:\n"
                f"    print(json.dumps(control.call(control_socket_path({self.name!r}), {op!r}, timeout=10, "
                f"**{params!r})))\n"
                "except control.ControlError as e:\n"
                "    print(json.dumps({'ok': False, 'error': e.error, 'detail': e.detail}))\n")
        python = self.python if self.mode == "rootless" else sys.executable
        cmd = self.net.command([python, "-c", code], as_nobody=self.mode == "rootless", cwd=str(self.work))
        done = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout) if done.stdout.strip() else {"ok": False, "error": done.stderr}

    def go(self, name: str) -> None:
        """Release a {"wait": ...} step."""
        path = self.work / name
        path.touch()
        os.chown(path, NOBODY_UID, NOBODY_GID)

    def wait_progress(self, step: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            progress = self.work / "progress"
            if progress.exists() and step in progress.read_text().split():
                return
            time.sleep(0.02)
        raise AssertionError(f"the sandbox never finished step {step!r}")


def make_e2e(request, mode: str, up: Upstreams) -> E2E:
    if os.geteuid() != 0:
        pytest.skip("the end-to-end suites run as root (CI does): root mode, and nobody for rootless")
    rootless = request.getfixturevalue("rootless")
    space = _workspace()
    ro = space / "ro"
    ro.mkdir()
    ro.chmod(0o755)
    shutil.copy(up.upstream_ca, ro / "upstream-ca.pem")
    state = str(space / "state")
    if mode == "rootless":
        env = rootless.env(XDG_STATE_HOME=state)
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env["XDG_STATE_HOME"] = state
    env["STOCKADE_PROPOSAL_FLUSH_S"] = "0.3"
    return E2E(mode, up.net, up, space, rootless.venv, env, rootless.stockade)


@pytest.fixture(params=["rootless", "root"])
def e2e(request, upstreams: Upstreams):
    env = make_e2e(request, request.param, upstreams)
    yield env
    _cleanup(env)


@pytest.fixture
def e2e_rootless(request, upstreams: Upstreams):
    env = make_e2e(request, "rootless", upstreams)
    yield env
    _cleanup(env)


def _cleanup(env: E2E) -> None:
    for proc in env.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    shutil.rmtree(env.space, ignore_errors=True)


def http(result: dict[str, Any]) -> tuple[int, Any]:
    """(status, body) of a `curl -s -w '\\n%{http_code}'` step; JSON bodies parsed."""
    body, _, code = result["out"].rpartition("\n")
    try:
        return int(code), json.loads(body)
    except ValueError:
        return int(code or 0), body
