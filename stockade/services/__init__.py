"""The services of a running sandbox: proxy, events, control socket (stockade/services/runtime.py),
and what `stockade run` decides for them before the sandbox starts (inputs.py).

    inputs = prepare_inputs(ServiceOptions(...), policy, policy_text)   # main thread, exit 125
    services = start_services(ctx)        # returns at once; setup continues on its thread
    services.started(pid) / .timed_out() / .failure_fd / .close(exit_code, status)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .inputs import ServiceInputs, ServiceOptions, prepare_inputs

if TYPE_CHECKING:
    from ..supervisor import ProxyContext
    from .runtime import Services


def start_services(ctx: ProxyContext) -> Services:
    from .runtime import Services

    return Services(ctx)


__all__ = ["ServiceInputs", "ServiceOptions", "prepare_inputs", "start_services"]
