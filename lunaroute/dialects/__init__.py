"""Sans-I/O parsers for the wire formats LunaRoute relays.

The proxy forwards provider responses to the client byte for byte; this
package follows those same bytes on the side and rebuilds the final response
(text, thinking, tool calls, usage) so it can be recorded and counted without
ever delaying or altering the relayed stream.  Nothing here does I/O or
imports Twisted, so every piece can be tested with plain byte strings.

The proxy only needs :class:`lunaroute.dialects.capture.ResponseCapture`;
the other submodules are the pieces it is built from.
"""

# Submodules rather than re-exported names: importing the package stays free
# and callers name the module they depend on.
__all__ = [
    "anthropic",
    "capture",
    "errors",
    "model",
    "openai_chat",
    "openai_responses",
    "sse",
]
