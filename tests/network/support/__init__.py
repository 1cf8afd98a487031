"""Helpers for the proxy tests: in-namespace event loops, test origins, HTTP/1.1 response parsing."""
