"""The one place where domain errors become gRPC statuses and uProtocol UStatus messages."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc

from utwin.errors import Code, UTwinError
from utwin_proto.uprotocol.v1 import ustatus_pb2

log = logging.getLogger("utwin.service")

GRPC_STATUS: dict[Code, grpc.StatusCode] = {code: grpc.StatusCode[code.name] for code in Code}
# What a caller is told of an unexpected error; the server log has its traceback.
INTERNAL_DETAIL = "internal error; see the server log"

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Request, grpc.aio.ServicerContext[Request, Response]], Awaitable[Response]]


async def abort(context: grpc.aio.ServicerContext[object, object], error: UTwinError) -> NoReturn:
    await context.abort(GRPC_STATUS[error.code], error.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def unary_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Turn domain errors raised by a unary handler into their status; anything else into INTERNAL."""

    @functools.wraps(handler)
    async def wrapper(request: Request, context: grpc.aio.ServicerContext[Request, Response]) -> Response:
        try:
            return await handler(request, context)
        except UTwinError as error:
            await context.abort(GRPC_STATUS[error.code], error.message)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            await context.abort(grpc.StatusCode.INTERNAL, log_unexpected(handler.__qualname__))
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper


def log_unexpected(where: str) -> str:
    """Log the exception being handled, with its traceback; the detail to send in its place."""
    log.exception("unexpected error in %s", where)
    return INTERNAL_DETAIL


@functools.lru_cache(maxsize=1024)
def ustatus_bytes(code: Code, detail: str) -> bytes:
    """A serialized UStatus (cached: a handful of distinct statuses repeat endlessly)."""
    return ustatus(code, detail).SerializeToString()


def ustatus(code: Code, detail: str) -> ustatus_pb2.UStatus:
    status = ustatus_pb2.UStatus(code=int(code))  # type: ignore[arg-type]
    if detail:
        status.message = detail
    return status
