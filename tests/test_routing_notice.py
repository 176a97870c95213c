"""
The switch notice put into the fallback's request (lunaroute.routing.notice).
"""

from __future__ import annotations

import json

from lunaroute.routing.notice import inject_switch_notice

NOTE = "IMPORTANT: tell the user \"backup\" answered."


def test_anthropic_latest_user_turn_gets_a_text_block_once() -> None:
    """Appended to the latest user turn (string content becomes blocks); a second injection adds nothing."""
    body = json.dumps({"model": "c", "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"},
    ]}).encode()
    out = inject_switch_notice("anthropic", body, NOTE)
    messages = json.loads(out)["messages"]
    assert messages[0] == {"role": "user", "content": "first"}
    assert messages[2]["content"] == [{"type": "text", "text": "second"}, {"type": "text", "text": NOTE}]
    assert inject_switch_notice("anthropic", out, NOTE) is out


def test_tool_result_turn_and_chat_parts() -> None:
    """After tool results the note is one more block; Chat part lists get a text part."""
    tool_turn = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}
    out = json.loads(inject_switch_notice("anthropic", json.dumps({"model": "c", "messages": [tool_turn]}).encode(), NOTE))
    assert out["messages"][0]["content"][-1] == {"type": "text", "text": NOTE}
    chat = {"model": "g", "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                                       {"role": "tool", "tool_call_id": "c", "content": "r"}]}
    out = json.loads(inject_switch_notice("openai_chat", json.dumps(chat).encode(), NOTE))
    assert out["messages"][0]["content"][-1] == {"type": "text", "text": NOTE}
    assert out["messages"][1] == chat["messages"][1]


def test_responses_get_a_last_developer_message() -> None:
    out = json.loads(inject_switch_notice("openai_responses", b'{"model": "m", "input": "hi"}', NOTE))
    assert out["input"] == [{"role": "user", "content": "hi"}, {"role": "developer", "content": NOTE}]


def test_nothing_to_add_to() -> None:
    """No conversation, or no user turn: the body as it was."""
    for dialect, body in (("anthropic", b'{"model": "m"}'), ("openai_chat", b'{"model": "m", "messages": []}'),
                          ("openai_responses", b'{"model": "m"}')):
        assert inject_switch_notice(dialect, body, NOTE) is body
