"""Sans-I/O translation between the API dialects LunaRoute speaks.

Each module translates one direction: request bodies as dicts, responses as
dicts, and streams event by event through an incremental converter that
returns the bytes to send for each parsed provider event.  Nothing here does
I/O; the gateway moves the bytes.  See docs/translation.md for every field.

Importing this package registers every shipped translator with
:func:`lunaroute.dialects.translate.base.register`, so the gateway finds
them with ``translator_for(source, target)``: a new direction's module is
imported here and needs no other wiring.
"""

from lunaroute.dialects.translate import (
    anthropic_to_chat,
    base,
    chat_to_anthropic,
    errors,
    responses_to_anthropic,
    responses_to_chat,
)

__all__ = [
    "anthropic_to_chat",
    "base",
    "chat_to_anthropic",
    "common",
    "errors",
    "responses_to_anthropic",
    "responses_to_chat",
]
