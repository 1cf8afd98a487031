"""An independent oracle for glob matching: regorus' rewrite plus globset's regex translation,
done the way policy.md §3.4 describes them (not segment by segment like stockade.policy.glob).

regorus: a delimiter `d` becomes `/d/` in both pattern and value and `/` becomes a placeholder
unless it is a delimiter; then globset matches with literal separators: `*` = `[^/]*`, `?` =
`[^/]`, `**/` at the start = `(?:/?|.*/)`, `/**` at the end = `/.*`, `/**/` = `(?:/|/.*/)`,
`**` alone = `.*`, any other `**` = `[^/]*[^/]*`, `{a,b}` = `(?:a|b)`.
Deliberate difference kept here: a character class never matches the separator.
"""

from __future__ import annotations

import re

PLACEHOLDER = "\x00"


def _rewrite(text: str, sep: str) -> str:
    if sep == "/":
        return text
    return text.replace("/", PLACEHOLDER).replace(sep, f"/{sep}/")


def reference_match(pattern: str, sep: str, value: str) -> bool:
    if pattern == "**":
        return True
    p, v = _rewrite(pattern, sep), _rewrite(value, sep)
    return re.fullmatch(_translate(p), v, re.DOTALL) is not None


def _translate(p: str) -> str:
    out: list[str] = []
    i, n = 0, len(p)
    depth = 0
    while i < n:
        c = p[i]
        if c == "*" and p[i:i + 2] == "**":
            at_start = i == 0
            prev_sep = i > 0 and p[i - 1] == "/"
            nxt = p[i + 2] if i + 2 < n else None
            if at_start and (nxt is None or nxt == "/"):
                out.append("(?:/?|.*/)" if nxt == "/" else ".*")
                i += 3 if nxt == "/" else 2
                continue
            if prev_sep and (nxt is None or nxt == "/"):
                assert out and out[-1] == "/"
                out.pop()
                out.append("/.*" if nxt is None else "(?:/|/.*/)")
                i += 2 if nxt is None else 3
                continue
            out.append("[^/]*[^/]*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = p.index("]", i + 2)
            body = p[i + 1:j]
            if body[0] in "!^":
                out.append("[^" + re.escape(body[1:]) + "/]")
            else:
                out.append("[" + re.escape(body) + "]")
            i = j + 1
        elif c == "{":
            depth += 1
            out.append("(?:")
            i += 1
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
            i += 1
        elif c == "," and depth:
            out.append("|")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)
