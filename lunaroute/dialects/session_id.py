"""
Which assistant session a request belongs to.

Claude Code puts its session id in C{metadata.user_id} (as a JSON string
holding C{session_id} in current versions, C{user_<hash>_account_<uuid>_session_<uuid>}
in older ones) and in an C{x-claude-code-session-id} header; Codex CLI sends a
C{session-id} header; other clients may send C{x-session-id}.  The id is
checked before it is used in a file name.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

_VALID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")

# Checked in order after metadata.user_id.
SESSION_HEADERS = (
    "x-claude-code-session-id",
    "session-id",
    "session_id",
    "x-session-id",
)


def is_valid_session_id(value: Any) -> bool:
    """Letters, digits, C{-} and C{_}, 1 to 255 of them: safe in a path."""
    return isinstance(value, str) and bool(_VALID.fullmatch(value))


def session_id_from_user_id(user_id: Any) -> str | None:
    """
    Pull the session id out of Anthropic's C{metadata.user_id}, in any of the
    three shapes Claude Code has used.
    """
    if isinstance(user_id, Mapping):
        candidate = user_id.get("session_id")
        return candidate if is_valid_session_id(candidate) else None
    if not isinstance(user_id, str) or not user_id:
        return None
    stripped = user_id.strip()
    if stripped.startswith("{"):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None
        if isinstance(decoded, Mapping):
            return session_id_from_user_id(decoded)
    marker = "_session_"
    at = user_id.rfind(marker)
    if at >= 0:
        candidate = user_id[at + len(marker):]
        return candidate if is_valid_session_id(candidate) else None
    return None


def extract_session_id(
    body: Mapping[str, Any] | None, header: Callable[[str], str | None]
) -> str | None:
    """
    The session id a request carries, or C{None}.

    @param body: the parsed request JSON, if any.
    @param header: looks a request header up by lower-case name.
    """
    if isinstance(body, Mapping):
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping):
            found = session_id_from_user_id(metadata.get("user_id"))
            if found:
                return found
    for name in SESSION_HEADERS:
        value = header(name)
        if value and is_valid_session_id(value.strip()):
            return value.strip()
    return None


def new_session_id() -> str:
    return str(uuid.uuid4())
