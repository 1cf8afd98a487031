"""Request targets: CONNECT authorities, absolute-form URLs, Host checks (network.md §9 76, 81, 104)."""

from __future__ import annotations

import pytest

from stockade.network.httphead import HttpError
from stockade.network.target import (
    Authority,
    check_tunnel_host,
    is_https,
    parse_absolute_url,
    parse_connect_target,
)


@pytest.mark.parametrize("target,host,port", [
    ("api.example.com:443", "api.example.com", 443),
    ("API.Example.COM:8443", "api.example.com", 8443),
    ("api.example.com.:443", "api.example.com", 443),
    ("10.0.0.1:80", "10.0.0.1", 80),
    ("[::1]:443", "::1", 443),
    ("[2001:DB8::1]:8080", "2001:db8::1", 8080),
    ("2130706433:80", "2130706433", 80),  # a numeric spelling: validated after resolution
    ("0x7f.1:80", "0x7f.1", 80),
])
def test_connect_targets(target, host, port):
    assert parse_connect_target(target) == Authority(host, port)


@pytest.mark.parametrize("target", [
    "example.com",  # no port (OpenShell closes silently; we answer 400)
    "example.com:", "example.com:0", "example.com:65536", "example.com:+443", "example.com:44 3",
    "::1:443", "[::1]", "[::1]443", "[fe80::1%25eth0]:443", "[not-v6]:443",
    "user@example.com:443", "exa mple.com:443", "exa%2ample.com:443", ":443",
    "a..b:443", "-" * 300 + ":443", "/path:443",
])
def test_bad_connect_targets(target):
    with pytest.raises(HttpError) as info:
        parse_connect_target(target)
    assert info.value.status == 400


@pytest.mark.parametrize("url,host,port,path", [
    ("http://10.86.8.223:8000/screenshot/", "10.86.8.223", 8000, "/screenshot/"),
    ("http://example.com/path", "example.com", 80, "/path"),
    ("http://10.0.0.1:9090", "10.0.0.1", 9090, "/"),
    ("http://host:80/api?key=val&foo=bar", "host", 80, "/api?key=val&foo=bar"),
    ("http://[::1]:8080/test", "::1", 8080, "/test"),
    ("http://[fe80::1]/path", "fe80::1", 80, "/path"),
    ("HTTP://Example.com?q=1", "example.com", 80, "/?q=1"),
])
def test_absolute_urls(url, host, port, path):
    parsed = parse_absolute_url(url)
    assert (parsed.authority.host, parsed.authority.port, parsed.target) == (host, port, path)
    assert not is_https(parsed)


def test_https_in_forward_form_is_recognised():
    parsed = parse_absolute_url("https://api.example.com/v1/chat")
    assert is_https(parsed) and parsed.authority.port == 443


@pytest.mark.parametrize("url", [
    "example.com/path", "http:///path", "/", "*", "ftp://host:21/x", "ws://h/x",
    "http://user:pw@h/x", "http://h/x#frag", "http://h:0/", "http://h:99999/",
])
def test_bad_absolute_urls(url):
    with pytest.raises(HttpError) as info:
        parse_absolute_url(url)
    assert info.value.status == 400


def test_forward_host_is_rewritten_to_the_url_authority():
    from stockade.network.exchange import forwarded_fields
    from stockade.network.httphead import parse_request_head
    from stockade.network.limits import Limits

    def fields(raw: bytes, host: str):
        return forwarded_fields(parse_request_head(raw, Limits()), host)

    out = fields(b"GET http://good.example/ HTTP/1.1\r\nAccept: */*\r\nHost: evil.example\r\n"
                 b"Proxy-Connection: keep-alive\r\nConnection: X-A\r\nX-A: 1\r\n\r\n",
                 Authority("good.example", 80).host_header(80))
    assert out == [("Host", "good.example"), ("Accept", "*/*")]
    assert fields(b"GET / HTTP/1.1\r\n\r\n", Authority("h", 8080).host_header(80))[0] == ("Host", "h:8080")
    assert Authority("::1", 80).host_header(80) == "[::1]"
    with pytest.raises(HttpError):
        fields(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "a")


def test_tunnel_host_must_match():
    auth = Authority("api.example.com", 443)
    check_tunnel_host([("Host", "api.example.com")], auth, "1.1")
    check_tunnel_host([("Host", "API.example.com:443")], auth, "1.1")
    check_tunnel_host([], auth, "1.0")
    for bad in ("evil.example.com", "api.example.com:444"):
        with pytest.raises(HttpError) as info:
            check_tunnel_host([("Host", bad)], auth, "1.1")
        assert info.value.status == 421
    for malformed in ([], [("Host", "a"), ("Host", "a")], [("Host", "a b")]):
        with pytest.raises(HttpError) as info:
            check_tunnel_host(malformed, auth, "1.1")
        assert info.value.status == 400
