"""
The switch notice in the request: when a fallback serves a request, the
original asks the model to tell the user (C{provider_switch_notification}).
The text comes from L{lunaroute.routing.plan.Router.switch_notice}; this
module puts it into the body sent to the fallback, once.

The note is added at the end of the conversation (to the latest user turn,
or as a last developer message for the Responses API): the model sees it
last, and the conversation prefix (and any prompt cache over it) stays as
it was.  A body that already holds the exact text is left alone, so a
second fallback does not stack notes.  Only fallback requests are touched,
and they are re-serialised (a rare path; the original re-serialises too).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["inject_switch_notice"]


def _append_text(content: Any, text: str, block_type: str) -> Any:
    if isinstance(content, str):
        return [{"type": block_type, "text": content}, {"type": block_type, "text": text}]
    if isinstance(content, list):
        return [*content, {"type": block_type, "text": text}]
    return [{"type": block_type, "text": text}]


def inject_switch_notice(dialect: str | None, body: bytes, text: str) -> bytes:
    """
    The body with C{text} added for the model to relay to the user.

    @param dialect: C{anthropic}, C{openai_chat} or C{openai_responses}.
    @param body: a request body that parsed as a JSON object.
    @return: the new body; C{body} itself when the notice is already there
        or the body has no conversation to add it to.
    """
    parsed = json.loads(body)
    if not isinstance(parsed, dict) or not text:
        return body
    if json.dumps(text, ensure_ascii=False)[1:-1] in body.decode("utf-8", "replace") or text in json.dumps(parsed):
        return body
    if dialect == "openai_responses":
        items = parsed.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if not isinstance(items, list):
            return body
        parsed["input"] = [*items, {"role": "developer", "content": text}]
    else:
        messages = parsed.get("messages")
        if not isinstance(messages, list):
            return body
        for index in range(len(messages) - 1, -1, -1):
            message = messages[index]
            if isinstance(message, dict) and message.get("role") == "user":
                messages[index] = {**message, "content": _append_text(message.get("content"), text, "text")}
                break
        else:
            return body
    return json.dumps(parsed, ensure_ascii=False).encode("utf-8")
