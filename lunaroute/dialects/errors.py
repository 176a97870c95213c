"""Error bodies in each provider's own format.

When the gateway itself has to refuse or fail a request, the client should
see an error shaped exactly like the upstream API's, so its SDK raises the
usual exception type instead of choking on an unfamiliar body.
"""

from __future__ import annotations

from typing import Any

from lunaroute.dialects.model import json_compact

__all__ = ["anthropic_error_body", "openai_error_body"]


def _compact(value: Any) -> bytes:
    return json_compact(value).encode("utf-8")


def anthropic_error_body(error_type: str, message: str) -> bytes:
    """``{"type":"error","error":{"type":...,"message":...}}`` as UTF-8 JSON."""
    return _compact({"type": "error", "error": {"type": error_type, "message": message}})


def openai_error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> bytes:
    """``{"error":{"message":...,"type":...,"param":...,"code":...}}`` as UTF-8 JSON."""
    return _compact(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )
