"""The services build the proxy's TLS material (leaf cache, upstream context) on a thread of its
own while serving starts, and hand it, or what went wrong, to the event loop's futures."""

from __future__ import annotations

import asyncio
import ssl
import types

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from stockade.isolation.camint import CaMaterial
from stockade.network.ca import CertificateAuthority
from stockade.services.runtime import _build_tls


def _context(ca: object) -> object:
    return types.SimpleNamespace(ca=ca)


def _material() -> tuple[CertificateAuthority, CaMaterial]:
    ca = CertificateAuthority.generate("t")
    key_pem = ca.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return ca, CaMaterial(key_pem, ca.certificate_pem, ca.bundle_pem)


async def _build(ctx: object, upstream_ca: str | None) -> tuple[object, object]:
    loop = asyncio.get_running_loop()
    leaves, upstream = loop.create_future(), loop.create_future()
    await asyncio.to_thread(_build_tls, ctx, upstream_ca, loop, leaves, upstream)
    results = await asyncio.gather(leaves, upstream, return_exceptions=True)
    return results[0], results[1]


def test_the_leaf_cache_and_the_upstream_context_reach_the_loop():
    ca, material = _material()
    leaves, upstream = asyncio.run(_build(_context(material), None))
    assert isinstance(upstream, ssl.SSLContext) and upstream.verify_mode == ssl.CERT_REQUIRED
    assert leaves.ca.certificate == ca.certificate  # type: ignore[attr-defined]
    assert isinstance(leaves.server_context("api.test"), ssl.SSLContext)  # type: ignore[attr-defined]


def test_a_failure_reaches_both_futures(tmp_path):
    class Broken:
        def load(self) -> None:
            raise ValueError("the CA did not load")

    leaves, upstream = asyncio.run(_build(_context(Broken()), None))
    assert isinstance(leaves, ValueError) and leaves is upstream
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    leaves, upstream = asyncio.run(_build(_context(_material()[1]), str(empty)))  # an unusable --upstream-ca
    assert isinstance(leaves, Exception) and isinstance(upstream, Exception)


def test_a_loop_that_ended_first_is_no_error():
    loop = asyncio.new_event_loop()
    leaves, upstream = loop.create_future(), loop.create_future()
    loop.close()

    class Broken:
        def load(self) -> None:
            raise ValueError("late")

    _build_tls(_context(Broken()), None, loop, leaves, upstream)  # returns quietly
    assert not leaves.done()
