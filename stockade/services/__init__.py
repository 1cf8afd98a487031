"""The services of a running sandbox: proxy, events, control socket (stockade/services/runtime.py),
and what `stockade run` decides for them before the sandbox starts (inputs.py).

    inputs = prepare_inputs(ServiceOptions(...), policy, policy_text)   # main thread, exit 125
    services = start_services(name, policy, spec, inputs)  # returns at once: opens the store on its thread
    services.serve(ctx)                   # the command starts: register the run, serve the proxy
    services.started(pid) / .timed_out() / .failure_fd / .close(exit_code, status)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .inputs import ServiceInputs, ServiceOptions, prepare_inputs

if TYPE_CHECKING:
    from ..isolation.spec import SandboxSpec
    from ..policy.model import Policy
    from .runtime import Services


def start_services(sandbox: str, policy: Policy, spec: SandboxSpec, inputs: ServiceInputs) -> Services:
    from .runtime import Services

    return Services(sandbox, policy, spec, inputs)


__all__ = ["ServiceInputs", "ServiceOptions", "prepare_inputs", "start_services"]
