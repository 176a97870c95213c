"""
The gateway's request class: enforces C{http_server.max_request_body_bytes}
while the body arrives, so an oversized upload is never held in memory or on
disk past the limit (Twisted would otherwise buffer all of it before any
route runs).  A declared C{Content-Length} over the limit is refused earlier
still, by L{lunaroute.proxy.site.GatewayChannel}, before the body is read;
what is counted here is a chunked body, which the channel refuses with the
same 413 the moment it passes the limit.

A body within the limit is kept in memory, whatever its size: Twisted puts
bodies of 100,000 bytes or more (and every chunked one) in a temporary file,
but the gateway reads the whole body into memory to parse and forward it
anyway, so the file only added its creation, writes and reads to every
Claude Code request past ~100 KB (most of a long session's).
"""

from __future__ import annotations

import io
from typing import Any

from twisted.web.server import Request

DEFAULT_MAX_BODY = 100 * 1024 * 1024


class GatewayRequest(Request):
    """
    A request that stops storing its body once it passes the site's limit
    and tells its channel (C{body_over_limit}), which answers 413 in the
    client's dialect; behind another channel, the route answers it once the
    body has ended.
    """

    body_too_large = False
    # The channel has answered this request (a 413) and is closing: no
    # route may run for it.
    answered_by_channel = False
    _body_received = 0

    def _limit(self) -> int:
        site: Any = getattr(self.channel, "site", None)
        return getattr(site, "max_request_body_bytes", DEFAULT_MAX_BODY)

    def gotLength(self, length: int | None) -> None:
        # A Content-Length over the limit never gets here: GatewayChannel
        # answers 413 as soon as the head is complete.  The count in
        # handleContentChunk still holds any body to the limit.
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._body_received += len(data)
        if self._body_received > self._limit():
            # Chunked upload went over: drop what was kept, and let the
            # gateway's channel answer 413 now rather than after the upload.
            self.body_too_large = True
            if self.content is not None:
                self.content.close()
            self.content = io.BytesIO()
            over_limit = getattr(self.channel, "body_over_limit", None)
            if over_limit is not None:
                over_limit(self)
                self.answered_by_channel = True
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The last chunk may be in the very bytes that passed the limit.
        if self.answered_by_channel:
            return
        super().requestReceived(command, path, version)
