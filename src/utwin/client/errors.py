"""What a failed call of the client library raises, and the one place gRPC errors become it.

UTwinError (utwin.errors)
└── CallFailed     a call failed as a whole: `code` (a Code, gRPC numbering) and `detail`
                   (the server's text); per-topic and per-message failures are returned, not raised

Imports no gRPC, so that code which only catches CallFailed (the CLI) stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from utwin.errors import Code, UTwinError, code_of

if TYPE_CHECKING:
    import grpc


class CallFailed(UTwinError):
    """A call failed as a whole; `code` says how (UNAVAILABLE, DEADLINE_EXCEEDED, NOT_FOUND, ...)."""

    def __init__(self, code: Code, detail: str) -> None:
        super().__init__(f"{code.name}: {detail}")
        self.code = code
        self.detail = detail


def call_failed(error: grpc.RpcError) -> CallFailed:
    """The CallFailed for a gRPC error: its status code and detail (raise it `from error`)."""
    status_code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if not callable(status_code):  # an RpcError that is not a call (no status): nothing more to say
        return CallFailed(Code.UNKNOWN, str(error) or type(error).__name__)
    detail = details() if callable(details) else ""
    return CallFailed(code_of(status_code().value[0]), detail or "")


def call_failure(error: CallFailed) -> str:
    """A failed call as people read it: its status code and the server's detail."""
    return error.message
