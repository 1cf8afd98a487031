"""The upstream side: one pooled httpx.AsyncClient per router, requests sent as streams.

Timeouts, and why these:
- connect: `connect_timeout` (a backend that does not accept is answered 504 quickly);
- response head: `response_timeout`, long by default because a non-streamed request to a
  reasoning model can think for minutes before the first byte;
- body: no total timeout (a long generation is legitimate); the relay enforces an idle gap
  between chunks instead (streaming.py).
Redirects are not followed: a redirect would carry the route's key to wherever it points
(httpx drops `Authorization` across origins, but not `x-api-key`). The supervisor's proxy
environment variables and .netrc are not consulted (`trust_env=False`): the route's URL is
where the request goes. Cookies are never stored. Backend TLS is verified against the system trust store.
"""

from __future__ import annotations

import asyncio
import ssl
from http.cookiejar import CookieJar, DefaultCookiePolicy
import httpx

from .errors import RouterError


class BackendFailure(Exception):
    """The backend could not be asked; `error` is what the client gets, `detail` goes to events."""

    def __init__(self, error: RouterError, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


def default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class Backend:
    def __init__(self, *, connect_timeout: float, verify: ssl.SSLContext | bool | str = True,
                 max_connections: int = 100) -> None:
        if verify is True:
            verify = default_ssl_context()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout, read=None, write=60.0, pool=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20,
                                keepalive_expiry=5.0),
            follow_redirects=False, trust_env=False, verify=verify, cookies=_no_cookies(),
        )

    async def open(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes | None,
                   *, response_timeout: float, host: str) -> httpx.Response:
        """The backend's response with its head read and its body still to stream."""
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            async with asyncio.timeout(response_timeout):
                return await self._client.send(request, stream=True)
        except TimeoutError:
            raise _timeout(host, f"no response head within {response_timeout:g} s") from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _timeout(host, f"{type(exc).__name__}") from None
        except httpx.TimeoutException as exc:
            raise _timeout(host, f"{type(exc).__name__}") from None
        except httpx.ConnectError as exc:
            raise BackendFailure(
                RouterError(502, "backend_unreachable", f"the model backend {host} is unreachable"),
                f"connect failed: {_reason(exc)}",
            ) from None
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            raise BackendFailure(
                RouterError(502, "backend_error", f"the model backend {host} failed before answering"),
                f"{type(exc).__name__}: {_reason(exc)}",
            ) from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _no_cookies() -> CookieJar:
    # httpx keeps a cookie jar per client by default: a cookie one backend sets would then be
    # sent to every backend on that host, from every sandbox process. The router is stateless.
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _timeout(host: str, detail: str) -> BackendFailure:
    return BackendFailure(
        RouterError(504, "backend_timeout", f"the model backend {host} did not answer in time"),
        detail,
    )


def _reason(exc: BaseException) -> str:
    # httpx wraps the OS error; its text names the address and errno, never a header.
    text = str(exc) or type(exc).__name__
    return text[:200]
