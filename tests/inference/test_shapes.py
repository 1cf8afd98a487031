"""Which requests on inference.local are inference calls (network.md §9 cases 82, 105)."""

from __future__ import annotations

import pytest

from stockade.inference.shapes import NotInference, Protocol, Refusal, Shape, classify, split_target

OPENAI = Protocol.OPENAI
ANTHROPIC = Protocol.ANTHROPIC
AV = [("anthropic-version", "2023-06-01")]


@pytest.mark.parametrize("method,path,protocol,kind", [
    ("POST", "/v1/chat/completions", OPENAI, "chat_completions"),
    ("POST", "/v1/completions", OPENAI, "completions"),
    ("POST", "/v1/responses", OPENAI, "responses"),
    ("POST", "/v1/embeddings", OPENAI, "embeddings"),
    ("GET", "/v1/models", OPENAI, "models_list"),
    ("GET", "/v1/models/gpt-4.1", OPENAI, "models_get"),
    ("GET", "/v1/models/meta-llama/Llama-3.1-8B", OPENAI, "models_get"),
    ("POST", "/v1/messages", ANTHROPIC, "messages"),
    ("POST", "/v1/messages/count_tokens", ANTHROPIC, "count_tokens"),
])
def test_recognised_shapes(method, path, protocol, kind):
    assert classify(method, path, []) == Shape(protocol, kind, path)


def test_the_query_string_is_ignored():
    assert classify("POST", "/v1/chat/completions?stream=true", []) == Shape(OPENAI, "chat_completions", "/v1/chat/completions")
    assert classify("POST", "/v1/messages?beta=true", AV).kind == "messages"


def test_models_endpoints_follow_the_protocol_headers():
    assert classify("GET", "/v1/models", AV).protocol is ANTHROPIC
    assert classify("GET", "/v1/models/claude-x", AV).protocol is ANTHROPIC
    assert classify("GET", "/v1/models", [("Authorization", "Bearer x")]).protocol is OPENAI
    # The path decides for the others, whatever the headers say.
    assert classify("POST", "/v1/chat/completions", AV).protocol is OPENAI


@pytest.mark.parametrize("method,target", [
    ("GET", "/v1/chat/completions"),        # wrong method
    ("POST", "/v1/chat/completions/"),      # trailing slash (case 105: refused, never tolerated)
    ("POST", "/v1/Chat/Completions"),       # no case folding
    ("POST", "/v1/chat%2Fcompletions"),     # no percent-decoding
    ("POST", "/v1/./chat/completions"),     # no dot-segment resolution
    ("GET", "/v1/models/"),                 # a models_get needs an id
    ("POST", "/v1/realtime"),
    ("POST", "/v1/messages/batches"),
    ("DELETE", "/v1/models/x"),
    ("post", "/v1/chat/completions"),       # methods are case-sensitive
])
def test_unknown_api_paths_are_404s(method, target):
    result = classify(method, target, [])
    assert isinstance(result, NotInference) and result.refusal is Refusal.UNKNOWN_API


@pytest.mark.parametrize("method,target", [
    ("GET", "/"), ("GET", "/admin/config"), ("POST", "/v2/chat/completions"), ("GET", "/v1"),
    ("CONNECT", "example.com:443"), ("OPTIONS", "*"), ("GET", "//v1/models"),
    ("GET", "http://evil.example/v1/models"), ("GET", "ftp://inference.local/v1/models"),
    ("GET", "http://user@inference.local/v1/models"),
])
def test_everything_else_is_forbidden(method, target):
    result = classify(method, target, [])
    assert isinstance(result, NotInference) and result.refusal is Refusal.FORBIDDEN


def test_absolute_form_for_inference_local_is_recognised():
    # A forward-proxy request on port 80 names the host in the target.
    assert classify("POST", "http://inference.local/v1/chat/completions", []).kind == "chat_completions"
    assert classify("POST", "http://INFERENCE.local:80/v1/messages", AV).kind == "messages"
    assert split_target("http://inference.local") == ("/", "", "inference.local")


def test_404s_answer_in_the_callers_protocol():
    assert classify("POST", "/v1/nope", AV).protocol is ANTHROPIC
    assert classify("POST", "/v1/nope", [("x-api-key", "k")]).protocol is ANTHROPIC
    assert classify("POST", "/v1/nope", []).protocol is OPENAI
