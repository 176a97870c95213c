"""Sans-I/O translation between the API dialects LunaRoute speaks.

Each module translates one direction: request bodies as dicts, responses as
dicts, and streams event by event through an incremental converter that
returns the bytes to send for each parsed provider event.  Nothing here does
I/O; the gateway moves the bytes.  Importing this package registers every
direction with :func:`lunaroute.dialects.translate.base.register`.  See
docs/translation.md for every field.
"""

from lunaroute.dialects.translate import (  # noqa: F401  (registers the translators)
    anthropic_to_chat,
    chat_to_anthropic,
    responses_to_anthropic,
    responses_to_chat,
)

__all__ = ["anthropic_to_chat", "chat_to_anthropic", "common", "errors", "responses_to_anthropic", "responses_to_chat"]
