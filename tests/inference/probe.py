"""What an agent inside a sandbox does: the real SDKs against https://inference.local with
their default clients, so the environment decides everything (HTTPS_PROXY, SSL_CERT_FILE),
exactly as in a sandbox. Prints one JSON line per call: {"call", "ok", ...}.

    python -m tests.inference.probe openai_chat openai_stream anthropic_message ...
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

HI = [{"role": "user", "content": "hi"}]
AGENT_KEY = "sk-agent-placeholder"  # what an agent in a sandbox has: not the route's key


def _openai() -> Any:
    import openai
    return openai.OpenAI(api_key=AGENT_KEY, base_url="https://inference.local/v1", max_retries=0)


def _anthropic() -> Any:
    import anthropic
    return anthropic.Anthropic(api_key=AGENT_KEY, base_url="https://inference.local", max_retries=0)


def openai_chat() -> dict[str, Any]:
    reply = _openai().chat.completions.create(model="gpt-4o", messages=HI)
    return {"text": reply.choices[0].message.content, "model": reply.model}


def openai_stream() -> dict[str, Any]:
    chunks = list(_openai().chat.completions.create(model="gpt-4o", messages=HI, stream=True))
    return {"text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)}


def anthropic_message() -> dict[str, Any]:
    message = _anthropic().messages.create(model="claude-x", max_tokens=32, messages=HI)
    return {"text": message.content[0].text, "model": message.model}


def anthropic_stream() -> dict[str, Any]:
    with _anthropic().messages.stream(model="claude-x", max_tokens=32, messages=HI) as stream:
        return {"text": "".join(stream.text_stream)}


def not_inference() -> dict[str, Any]:
    import httpx2
    with httpx2.Client() as client:  # trust_env: through the proxy, trusting the sandbox CA
        reply = client.get("https://inference.local/admin/config")
    return {"status": reply.status_code, "body": reply.json()}


CALLS: dict[str, Callable[[], dict[str, Any]]] = {
    f.__name__: f for f in (openai_chat, openai_stream, anthropic_message, anthropic_stream, not_inference)
}


def main(names: list[str]) -> None:
    for name in names or list(CALLS):
        try:
            result = {"call": name, "ok": True, **CALLS[name]()}
        except Exception as exc:  # noqa: BLE001 - reported, the next call still runs
            result = {"call": name, "ok": False, "error": type(exc).__name__,
                      "status": getattr(exc, "status_code", None), "message": str(exc)[:300]}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
