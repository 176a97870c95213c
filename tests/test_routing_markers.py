"""
Marker routing (lunaroute.routing.markers): [LUNAROUTE:<name>] in the latest
user turn of each dialect, and stripping that keeps every other byte.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lunaroute.routing.markers import Marker, find_marker, has_marker, strip_markers

REMINDER = "<system-reminder>\n[LUNAROUTE:sonnet]\n</system-reminder>"


def anthropic(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 10, "messages": list(messages)}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


TOOL_RESULTS = user([{"type": "tool_result", "tool_use_id": "t1", "content": "[LUNAROUTE:evil] file text"}])


# --------------------------------------------------------------------------
# find_marker


def test_marker_in_a_claude_code_reminder_block() -> None:
    """The hook's shape: the user's text, then a reminder block holding the marker."""
    body = anthropic(user([{"type": "text", "text": "rewrite this"}, {"type": "text", "text": REMINDER}]))
    assert find_marker("anthropic", body) == Marker("sonnet")
    assert not Marker("sonnet").clear


def test_clear_marker() -> None:
    """[LUNAROUTE:clear] means back to normal routing."""
    marker = find_marker("anthropic", anthropic(user("[LUNAROUTE:clear] go on")))
    assert marker == Marker(None) and marker.clear


def test_only_the_latest_user_turn_counts() -> None:
    """A marker left in the history is ignored once a newer user turn has none."""
    body = anthropic(user("[LUNAROUTE:old] a"), assistant("ok"), user("plain question"))
    assert find_marker("anthropic", body) is None


def test_tool_result_turns_are_skipped() -> None:
    """In a tool loop the marker of the turn that started it still applies (not the tool's output)."""
    body = anthropic(
        user([{"type": "text", "text": "do it"}, {"type": "text", "text": REMINDER}]),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        TOOL_RESULTS,
    )
    assert find_marker("anthropic", body) == Marker("sonnet")


def test_openai_chat_and_parts() -> None:
    """Chat Completions: string content or text parts; tool messages are not user turns."""
    body = {"model": "gpt", "messages": [
        {"role": "system", "content": "[LUNAROUTE:sys]"},
        {"role": "user", "content": [{"type": "text", "text": "hi [LUNAROUTE:gpt4o]"}]},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "[LUNAROUTE:tool]"},
    ]}
    assert find_marker("openai_chat", body) == Marker("gpt4o")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "m", "input": "hello [LUNAROUTE:a]"}, Marker("a")),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "[LUNAROUTE:b]"}]},
                                  {"type": "function_call_output", "call_id": "c", "output": "[LUNAROUTE:x]"}]}, Marker("b")),
        ({"model": "m", "input": [{"type": "message", "role": "user", "content": "x [LUNAROUTE:c]"}]}, Marker("c")),
        ({"model": "m", "input": [{"role": "developer", "content": "[LUNAROUTE:d]"}]}, None),
        ({"model": "m"}, None),
    ],
)
def test_responses_input(body: dict[str, Any], expected: Marker | None) -> None:
    """Responses: input as a string or items; function call outputs are not user turns."""
    assert find_marker("openai_responses", body) == expected


def test_no_body_or_no_marker() -> None:
    assert find_marker("anthropic", None) is None
    assert find_marker("anthropic", anthropic(user("[LUNAROUTE:]"), )) is None
    assert find_marker("anthropic", {"messages": "nope"}) is None


# --------------------------------------------------------------------------
# strip_markers


def test_body_without_marker_is_the_same_object() -> None:
    """The hot path: no marker, no copy."""
    body = json.dumps(anthropic(user("hi"))).encode()
    assert not has_marker(body)
    assert strip_markers("anthropic", body) is body


def test_reminder_block_is_removed_and_every_other_byte_kept() -> None:
    """
    The standalone reminder block goes (with its separator); the rest of the
    body, odd spacing and escapes included, is byte for byte the same.
    """
    raw = (
        b'{"model":  "claude-x",\n "messages": [{"role": "user", "content": [{"type": "text", "text": "caf\\u00e9 \\/ x"},'
        b' {"type": "text", "text": "<system-reminder>\\n[LUNAROUTE:sonnet]\\n</system-reminder>"}]}],'
        b'\n "max_tokens": 5}'
    )
    out = strip_markers("anthropic", raw)
    assert out == (
        b'{"model":  "claude-x",\n "messages": [{"role": "user", "content": [{"type": "text", "text": "caf\\u00e9 \\/ x"}]}],'
        b'\n "max_tokens": 5}'
    )


def test_inline_markers_are_cut_from_the_text() -> None:
    """A marker inside a sentence is cut, the sentence kept."""
    raw = json.dumps(anthropic(user("please [LUNAROUTE:sonnet]fix it"))).encode()
    out = json.loads(strip_markers("anthropic", raw))
    assert out["messages"][0]["content"] == "please fix it"


def test_history_markers_are_stripped_too_but_not_tool_results_or_assistant_text() -> None:
    """
    Every user turn loses its markers (the prefix stays stable across
    requests); tool results, assistant and system text are never touched.
    """
    body = anthropic(
        user([{"type": "text", "text": "first"}, {"type": "text", "text": REMINDER}]),
        {"role": "assistant", "content": [{"type": "text", "text": "said [LUNAROUTE:sonnet]"}]},
        TOOL_RESULTS,
        user("again [LUNAROUTE:clear]"),
    )
    body["system"] = "about [LUNAROUTE:x]"
    out = json.loads(strip_markers("anthropic", json.dumps(body).encode()))
    assert out["messages"][0]["content"] == [{"type": "text", "text": "first"}]
    assert out["messages"][1]["content"][0]["text"] == "said [LUNAROUTE:sonnet]"
    assert out["messages"][2] == TOOL_RESULTS
    assert out["messages"][3]["content"] == "again "
    assert out["system"] == "about [LUNAROUTE:x]"


def test_a_turn_left_empty_is_removed() -> None:
    """A user turn that was only a marker goes entirely, with its separator."""
    body = anthropic(user("[LUNAROUTE:sonnet]"), assistant("ok"), user([{"type": "text", "text": REMINDER}]), user("q"))
    out = json.loads(strip_markers("anthropic", json.dumps(body).encode()))
    assert out["messages"] == [assistant("ok"), user("q")]


def test_responses_and_chat_bodies() -> None:
    """Responses input items and input strings, Chat parts: markers stripped the same way."""
    items = {"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "x [LUNAROUTE:b]"}, {"type": "input_text", "text": "[LUNAROUTE:b]"}]},
        {"type": "function_call_output", "call_id": "c", "output": "[LUNAROUTE:keep]"},
    ]}
    out = json.loads(strip_markers("openai_responses", json.dumps(items).encode()))
    assert out["input"][0]["content"] == [{"type": "input_text", "text": "x "}]
    assert out["input"][1]["output"] == "[LUNAROUTE:keep]"
    single = json.loads(strip_markers("openai_responses", b'{"model": "m", "input": "hi [LUNAROUTE:a]"}'))
    assert single["input"] == "hi "
    chat = {"model": "g", "messages": [{"role": "user", "content": [{"type": "text", "text": "[LUNAROUTE:a] go"}]}]}
    assert json.loads(strip_markers("openai_chat", json.dumps(chat).encode()))["messages"][0]["content"][0]["text"] == " go"


def test_undecodable_body_is_reserialised_without_markers() -> None:
    """UTF-16 (valid JSON, not splicable): re-serialised, markers still gone."""
    body = json.dumps(anthropic(user("a [LUNAROUTE:s]"), user([{"type": "text", "text": REMINDER}]))).encode("utf-16")
    out = json.loads(strip_markers("anthropic", body))
    assert out["messages"] == [user("a ")]
    plain = json.dumps(anthropic(user("no marker"))).encode("utf-16")
    assert strip_markers("anthropic", plain) is plain


def test_escaped_backslash_before_a_reminder_stays_valid_json() -> None:
    """A text ending in a backslash right before the reminder is not broken by the cut."""
    body = anthropic(user("path C:\\dir\\<system-reminder>\n[LUNAROUTE:s]\n</system-reminder>"))
    out = json.loads(strip_markers("anthropic", json.dumps(body).encode()))
    assert out["messages"][0]["content"] == "path C:\\dir\\"
