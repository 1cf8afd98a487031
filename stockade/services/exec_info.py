"""The `exec_info` control op: what `stockade exec NAME -- COMMAND` needs to join a running
sandbox. The `exec` key is stockade exec's own description of the sandbox's layers
(isolation/enter.py: exec_info_payload); the rest is a summary for humans and tools."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..isolation.spec import SandboxSpec
    from ..supervisor import SandboxProcesses


def exec_info(spec: SandboxSpec, processes: SandboxProcesses) -> dict[str, Any]:
    """Pids are host pids except `agent_pid` (the sandbox's own pid namespace)."""
    from ..isolation.enter import exec_info_payload

    run_as = spec.run_as
    return {
        "sandbox": spec.name,
        "isolation": spec.isolation,
        "namespaces": list(spec.namespaces),
        "rootless": spec.rootless,
        "supervisor_pid": os.getpid(),
        "launcher_pid": processes.launcher_pid,
        "init_pid": processes.init_pid,
        "agent_pid": processes.agent_pid,
        "workdir": spec.cwd,
        "uid": run_as.uid if run_as else spec.uid,
        "gid": run_as.gid if run_as else spec.gid,
        "groups": list(run_as.groups) if run_as else [],
        "exec": exec_info_payload(spec, processes),
    }
