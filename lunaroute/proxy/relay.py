"""
The streaming relay: upstream body bytes are written to the client as they
arrive, with the upstream socket registered as the client request's producer
so that a slow client pauses the provider (TCP backpressure end to end).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss as HTTPPotentialDataLoss

from lunaroute.logs import log_observer

log = Logger(observer=log_observer)


# Chunk gaps kept per response (for the chunk-latency histogram and the
# record's gap summary): a real answer has a few thousand chunks at most; a
# provider streaming without end must not grow the list without end.
MAX_CHUNK_GAPS = 100_000


class RelayProtocol(Protocol):
    """
    Receives the provider's body via C{IResponse.deliverBody} and writes each
    chunk straight to the client's request.

    C{done} fires with C{None} when the body has ended; C{failure} then holds
    what cut it short, if anything, and C{lost} says it in a sentence
    (C{done} never errbacks: by then the status line is already on its way
    to the client).  Cancelling C{done} aborts the upstream connection, which
    is how a client disconnect reaches the provider; L{cut} does the same for
    a gateway that is stopping.
    """

    def __init__(
        self,
        request: Any,
        clock: IReactorTime,
        on_chunk: Callable[[bytes], None],
        idle_timeout: float,
    ) -> None:
        self._request = request
        self._clock = clock
        self._on_chunk = on_chunk
        self._idle_timeout = idle_timeout
        self._idle_call: IDelayedCall | None = None
        self._registered = False
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        self.bytes = 0
        self.chunks = 0
        self.gaps_ms: list[float] = []
        self.timed_out = False
        self.cut_by_gateway = False
        # The first chunk's tap work waits for the next chunk (or the end):
        # it would otherwise run in the same reactor turn as the first write
        # and delay the client's first byte.
        self._held: bytes | None = None
        self.failure: Failure | None = None
        self.done: defer.Deferred[None] = defer.Deferred(self._cancel)

    def connectionMade(self) -> None:
        if getattr(self._request, "channel", None) is None:
            # The client left before the body started: nobody to relay to.
            self._abort()
            return
        if self.transport is not None:
            self._request.registerProducer(self.transport, True)
            self._registered = True
        self._arm_idle_timer()

    def dataReceived(self, data: bytes) -> None:
        now = self._clock.seconds()
        if self.first_byte is None:
            self.first_byte = now
        elif self.last_byte is not None and self.chunks <= MAX_CHUNK_GAPS:
            self.gaps_ms.append((now - self.last_byte) * 1000.0)
        self.last_byte = now
        self.bytes += len(data)
        self.chunks += 1
        self.deliver(data)
        # (The idle timer is not reset here: when it fires it looks at
        # last_byte and waits on if the stream was not idle that long.)
        if self.chunks == 1:
            self._held = data
            return
        self._release_held()
        self._tap(data)

    def deliver(self, data: bytes) -> None:
        """Send one provider chunk on to the client: as it is, here."""
        self._request.write(data)

    def body_ended(self, reason: Failure) -> None:
        """The provider's body ended (C{reason}); nothing more to send here."""

    def _tap(self, data: bytes) -> None:
        try:
            self._on_chunk(data)
        except Exception:
            # The tap is best effort; the bytes already went to the client.
            log.failure("stream tap failed")

    def _release_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._tap(held)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self._release_held()
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        if self._registered:
            self._registered = False
            try:
                self._request.unregisterProducer()
            except Exception:
                pass
        if self.done.called:
            return
        if not reason.check(ResponseDone, PotentialDataLoss, HTTPPotentialDataLoss):
            self.failure = reason
        try:
            self.body_ended(reason)
        except Exception:
            log.failure("ending the relayed body failed")
        self.done.callback(None)

    def _arm_idle_timer(self) -> None:
        if self._idle_timeout and self._idle_timeout > 0:
            self._idle_call = self._clock.callLater(self._idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_call = None
        if self.last_byte is not None:
            # A chunk came since the timer was set: idle since then only.
            left = self.last_byte + self._idle_timeout - self._clock.seconds()
            if left > 0:
                self._idle_call = self._clock.callLater(left, self._on_idle)
                return
        log.warn("upstream sent nothing for {secs}s; aborting", secs=self._idle_timeout)
        self.timed_out = True
        self._abort()

    @property
    def lost(self) -> str | None:
        """Why the provider's body ended early, as a sentence; C{None} if it did not."""
        if self.failure is None:
            return None
        return describe_loss(self.failure)

    def cut(self) -> None:
        """Stop relaying now (the gateway is stopping): abort the upstream body."""
        self.cut_by_gateway = True
        self._abort()

    def _abort(self) -> None:
        # The transport deliverBody gives us is the upstream connection's,
        # which is also a producer (IPushProducer.stopProducing aborts it).
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def _cancel(self, d: defer.Deferred[Any]) -> None:
        self._abort()


def describe_loss(reason: Failure) -> str:
    """A readable phrase for why an upstream body ended early (never a repr)."""
    reasons = [reason]
    if reason.check(ResponseFailed):
        reasons = list(getattr(reason.value, "reasons", None) or []) or reasons
    for inner in reasons:
        if inner.check(error.ConnectionDone):
            return "closed the connection"
        if inner.check(error.ConnectionLost):
            return "reset the connection"
        if inner.check(defer.CancelledError):
            return "was cancelled"
    inner = reasons[0]
    message = inner.getErrorMessage()
    if message and not message.startswith("["):
        return f"failed ({message})"
    return f"failed ({getattr(inner.type, '__name__', 'error')})"
