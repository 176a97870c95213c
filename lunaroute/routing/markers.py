"""
Marker routing, as in the original: a user writes C{[LUNAROUTE:<name>]}
(typically injected by a Claude Code hook as a C{<system-reminder>} block)
to send that request to the provider called C{<name>};
C{[LUNAROUTE:clear]} goes back to normal routing.

Only the latest user turn counts (turns that only carry tool results are
skipped, so a tool loop keeps going to the provider the user asked for);
markers left in the history are ignored.  Before the request is forwarded
every marker is removed from the text of every user turn
(L{strip_markers}), so the provider never sees one and the conversation
prefix stays the same from one request to the next (prompt caching).  A
C{<system-reminder>} wrapping nothing but a marker goes with it; a text
block or message left empty is removed.  Every other byte of the body stays
as it was (as L{lunaroute.dialects.request_view.replace_model} does for the
model); a body the splicer cannot handle is re-serialised instead.

Pure functions over the parsed body and its bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CLEAR", "Marker", "find_marker", "has_marker", "strip_markers"]

CLEAR = "clear"
MARKER = re.compile(r"\[LUNAROUTE:([A-Za-z0-9._-]+)\]")
_MARKER_BYTES = b"[LUNAROUTE:"

# In the raw JSON text of a string: a <system-reminder> holding only a
# marker (the whitespace around it written as JSON escapes or spaces).  It
# starts after '>' and the marker ends with ']', so every backslash matched
# here begins an escape: removing the match never splits one.
_RAW_WRAPPED = re.compile(
    r"<system-reminder>(?:\\[nrt]| )*\[LUNAROUTE:[A-Za-z0-9._-]+\](?:\\[nrt]| )*</system-reminder>"
)
_RAW_MARKER = re.compile(r"\[LUNAROUTE:[A-Za-z0-9._-]+\]")
_TEXT_TYPES = ("text", "input_text")


@dataclass(frozen=True)
class Marker:
    """
    A marker found in the latest user turn.

    @ivar provider: the provider named, or C{None} for C{[LUNAROUTE:clear]}.
    """

    provider: str | None

    @property
    def clear(self) -> bool:
        """Whether this is C{[LUNAROUTE:clear]} (back to normal routing)."""
        return self.provider is None


def has_marker(body: bytes) -> bool:
    """A cheap test on the raw body: could it hold a marker at all?"""
    return _MARKER_BYTES in body


# --------------------------------------------------------------------------
# Finding the marker


def _turns(dialect: str | None, body: Mapping[str, Any]) -> list[Any] | None:
    """The list of conversation turns of a request body, or C{None}."""
    if dialect == "openai_responses":
        turns = body.get("input")
        if isinstance(turns, str):
            return [{"role": "user", "content": turns}]
    else:
        turns = body.get("messages")
    return turns if isinstance(turns, list) else None


def _is_user(turn: Any) -> bool:
    return isinstance(turn, Mapping) and turn.get("role") == "user" and turn.get("type", "message") == "message"


def _only_tool_results(turn: Mapping[str, Any]) -> bool:
    content = turn.get("content")
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(block, Mapping) and block.get("type") == "tool_result" for block in content)
    )


def _texts(turn: Mapping[str, Any]) -> Iterator[str]:
    content = turn.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping) and block.get("type") in _TEXT_TYPES and isinstance(block.get("text"), str):
                yield block["text"]


def find_marker(dialect: str | None, body: Mapping[str, Any] | None) -> Marker | None:
    """
    The first marker in the text of the latest user turn of a parsed
    request body (Anthropic Messages, Chat Completions or Responses), or
    C{None}.

    @param dialect: the request's dialect (C{anthropic}, C{openai_chat},
        C{openai_responses}), as in L{RequestView.dialect}.
    """
    if not isinstance(body, Mapping):
        return None
    turns = _turns(dialect, body)
    if not turns:
        return None
    for turn in reversed(turns):
        if not _is_user(turn) or _only_tool_results(turn):
            continue
        for text in _texts(turn):
            found = MARKER.search(text)
            if found is not None:
                name = found.group(1)
                return Marker(None if name == CLEAR else name)
        return None
    return None


# --------------------------------------------------------------------------
# Stripping, splicing the raw JSON text


def _clean(text: str) -> str:
    """A string's text without markers (and their bare <system-reminder> wrappers)."""
    return MARKER.sub("", re.sub(r"<system-reminder>\s*\[LUNAROUTE:[A-Za-z0-9._-]+\]\s*</system-reminder>", "", text))


_DECODER = json.JSONDecoder()
_WS = " \t\n\r"


def _skip(text: str, i: int) -> int:
    while text[i] in _WS:
        i += 1
    return i


def _members(text: str, start: int) -> dict[str, tuple[int, int]]:
    """An object's members: key -> (value start, value end); C{start} is at '{'."""
    members: dict[str, tuple[int, int]] = {}
    i = _skip(text, start + 1)
    if text[i] == "}":
        return members
    while True:
        key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        i = _skip(text, i) + 1  # the colon
        i = _skip(text, i)
        _, end = _DECODER.raw_decode(text, i)
        members[key] = (i, end)
        i = _skip(text, end)
        if text[i] == "}":
            return members
        i = _skip(text, i + 1)


def _items(text: str, start: int) -> list[tuple[int, int]]:
    """An array's items as (start, end); C{start} is at '['."""
    items: list[tuple[int, int]] = []
    i = _skip(text, start + 1)
    if text[i] == "]":
        return items
    while True:
        _, end = _DECODER.raw_decode(text, i)
        items.append((i, end))
        i = _skip(text, end)
        if text[i] == "]":
            return items
        i = _skip(text, i + 1)


Edit = tuple[int, int, str]


def _remove_items(items: list[tuple[int, int]], remove: set[int]) -> list[Edit]:
    """Edits cutting the items at C{remove} (and one separator each) out of an array."""
    edits: list[Edit] = []
    index = 0
    count = len(items)
    while index < count:
        if index not in remove:
            index += 1
            continue
        last = index
        while last + 1 < count and last + 1 in remove:
            last += 1
        if last + 1 < count:
            edits.append((items[index][0], items[last + 1][0], ""))
        elif index > 0:
            edits.append((items[index - 1][1], items[last][1], ""))
        else:
            edits.append((items[0][0], items[last][1], ""))
        index = last + 1
    return edits


def _string_edit(text: str, span: tuple[int, int]) -> tuple[Edit | None, bool]:
    """
    The edit removing markers from the JSON string at C{span}, and whether
    the string is empty (only whitespace) afterwards.
    """
    raw = text[span[0] : span[1]]
    if "[LUNAROUTE:" not in raw:
        return None, False
    new = _RAW_MARKER.sub("", _RAW_WRAPPED.sub("", raw))
    empty = not json.loads(new).strip()
    return (span[0], span[1], new), empty


def _splice(text: str, dialect: str | None) -> str:
    top = _members(text, _skip(text, 0))
    key = "input" if dialect == "openai_responses" else "messages"
    if key not in top:
        return text
    start, end = top[key]
    if text[start] == '"':
        # Responses' input as one string: the user's text itself.
        edit, _ = _string_edit(text, (start, end))
        return text if edit is None else text[:start] + edit[2] + text[end:]
    if text[start] != "[":
        return text
    edits: list[Edit] = []
    turns = _items(text, start)
    dropped_turns: set[int] = set()
    for index, (turn_start, _turn_end) in enumerate(turns):
        if text[turn_start] != "{":
            continue
        members = _members(text, turn_start)
        if "role" not in members or json.loads(text[slice(*members["role"])]) != "user":
            continue
        if "type" in members and json.loads(text[slice(*members["type"])]) != "message":
            continue
        if "content" not in members:
            continue
        content = members["content"]
        turn_edits: list[Edit] = []
        if text[content[0]] == '"':
            edit, empty = _string_edit(text, content)
            if edit is not None:
                if empty:
                    dropped_turns.add(index)
                    continue
                turn_edits.append(edit)
        elif text[content[0]] == "[":
            blocks = _items(text, content[0])
            dropped_blocks: set[int] = set()
            for block_index, (block_start, _block_end) in enumerate(blocks):
                if text[block_start] != "{":
                    continue
                block = _members(text, block_start)
                if "type" not in block or json.loads(text[slice(*block["type"])]) not in _TEXT_TYPES:
                    continue
                if "text" not in block or text[block["text"][0]] != '"':
                    continue
                edit, empty = _string_edit(text, block["text"])
                if edit is None:
                    continue
                if empty:
                    dropped_blocks.add(block_index)
                else:
                    turn_edits.append(edit)
            if dropped_blocks and len(dropped_blocks) == len(blocks):
                dropped_turns.add(index)
                continue
            turn_edits.extend(_remove_items(blocks, dropped_blocks))
        edits.extend(turn_edits)
    edits.extend(_remove_items(turns, dropped_turns))
    for edit_start, edit_end, replacement in sorted(edits, reverse=True):
        text = text[:edit_start] + replacement + text[edit_end:]
    return text


def _strip_parsed(dialect: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """The same stripping on a parsed body (the fallback when splicing cannot be done)."""
    key = "input" if dialect == "openai_responses" else "messages"
    turns = body.get(key)
    if isinstance(turns, str):
        return {**body, key: _clean(turns)}
    if not isinstance(turns, list):
        return body
    kept = []
    for turn in turns:
        if not _is_user(turn):
            kept.append(turn)
            continue
        content = turn.get("content")
        if isinstance(content, str):
            content = _clean(content)
            if not content.strip():
                continue
        elif isinstance(content, list):
            blocks = []
            for block in content:
                if isinstance(block, Mapping) and block.get("type") in _TEXT_TYPES and isinstance(block.get("text"), str):
                    text = _clean(block["text"])
                    if not text.strip():
                        continue
                    block = {**block, "text": text}
                blocks.append(block)
            if content and not blocks:
                continue
            content = blocks
        kept.append({**turn, "content": content})
    return {**body, key: kept}


def strip_markers(dialect: str | None, body: bytes) -> bytes:
    """
    The body without markers in its user turns; the same bytes (the same
    object) when it holds none.  Every byte outside the removed markers,
    wrappers, emptied text blocks and emptied messages is kept.

    @param dialect: as for L{find_marker}.
    @param body: a request body that parsed as a JSON object.
    """
    # UTF-16/32 JSON (a NUL among the first bytes) cannot be searched as bytes.
    if not has_marker(body) and b"\x00" not in body[:4]:
        return body
    try:
        text = body.decode("utf-8")
        spliced = _splice(text, dialect)
        json.loads(spliced)  # never forward something we broke
    except (UnicodeDecodeError, ValueError, IndexError, KeyError):
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            return body
        stripped = _strip_parsed(dialect, parsed)
        if stripped == parsed:
            return body
        return json.dumps(stripped, ensure_ascii=False).encode("utf-8")
    return body if spliced == text else spliced.encode("utf-8")
