"""The error a translation raises for a field the other dialect cannot carry."""

from __future__ import annotations

from lunaroute.errors import RequestError

__all__ = ["UntranslatableField"]


class UntranslatableField(RequestError):
    """
    The request uses something the target dialect has no way to express.

    Answered with a 400 ``invalid_request_error`` in the client's dialect.

    @ivar field: the path of the offending field, e.g.
        ``messages[3].content[0].type``.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}", status=400, error_type="invalid_request_error")
