"""
The seam between the gateway and the translators.

A :class:`Translator` carries one direction: requests in the ``source``
dialect (what the client speaks: ``anthropic``, ``openai_chat`` or
``openai_responses``, as :class:`lunaroute.dialects.request_view.RequestView`
names them) sent to a provider that speaks ``target`` (``anthropic`` or
``openai_chat``).  Everything is free of I/O: the gateway parses, sends and
writes; a translator only turns dicts into dicts and parsed stream events
into the client's bytes.

The gateway looks a translator up with :func:`translator_for` in its send
step, for each attempt whose provider speaks another dialect than the
client; when dialect and provider match nothing is looked up and the
request is relayed byte for byte.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["StreamTranslator", "Translator", "register", "translator_for"]


class StreamTranslator(Protocol):
    """
    Turns a provider's stream into the client's, one event at a time.

    ``feed`` takes the JSON of one ``data:`` line of the provider's stream
    (a dict; for Anthropic it carries its own ``type``), or the string
    ``"[DONE]"``, and returns the bytes to send to the client now (maybe
    empty): complete SSE frames in the client's dialect, never holding
    back a delta.  ``close`` is called once when the provider's body ends
    (cleanly or not) and returns the closing bytes: the end of a stream
    that lacked its terminator, or an error event in the client's dialect
    if the answer was cut short.  ``finished`` is true once the client's
    stream is complete (its terminal event sent).
    """

    @property
    def finished(self) -> bool: ...

    def feed(self, event: dict[str, Any] | str) -> bytes: ...

    def close(self) -> bytes: ...


class Translator(Protocol):
    """
    One direction of translation.

    @ivar source: the client's request dialect.
    @ivar target: the provider's dialect.
    @ivar target_path: the provider path to send to (e.g.
        ``/v1/chat/completions``), joined to the provider's base URL by the
        provider, never by string concatenation.
    """

    source: str
    target: str
    target_path: str

    def request(self, body: dict[str, Any], model: str | None, dropped: list[str]) -> dict[str, Any]:
        """
        The provider's request body for the client's ``body`` (never
        modified).  ``model`` replaces the model when given (model mapping
        happens before).  Paths of fields dropped on purpose are appended
        to ``dropped``.  Raises
        :class:`lunaroute.dialects.translate.errors.UntranslatableField`
        for what cannot be carried.
        """
        ...

    def response(self, body: dict[str, Any], client_model: str) -> dict[str, Any]:
        """A provider's successful JSON answer as the client's; ``client_model`` is the name reported."""
        ...

    def error(self, body: Any, status: int) -> dict[str, Any]:
        """A provider's error body (any JSON, or None) with its HTTP status, as the client's error body."""
        ...

    def stream(self, client_model: str) -> StreamTranslator:
        """A fresh converter for one streamed answer."""
        ...


_REGISTRY: dict[tuple[str, str], Translator] = {}


def register(translator: Translator) -> Translator:
    """Make ``translator`` the one for its (source, target) pair; returns it."""
    _REGISTRY[(translator.source, translator.target)] = translator
    return translator


def translator_for(source: str, target: str) -> Translator | None:
    """The translator from ``source`` to ``target``, or None when there is none."""
    return _REGISTRY.get((source, target))
