"""The one place where errors become gRPC statuses and uProtocol UStatus messages.

`ErrorGate` is the inbound gate every handler of every served service runs
behind, unary and streaming alike: it decodes the request itself (a failing
deserializer inside gRPC would reach the caller as UNKNOWN), answers a
malformed request INVALID_ARGUMENT naming what was wrong, a domain error its
own status, and anything unexpected INTERNAL with a generic message. Details
of the unexpected go to the log, rate-limited per site; none reach a client.
It also ends the streams that would otherwise stay open through shutdown.

The gate gives each call its request id (current for every record the call
logs, and returned as the trailing metadata `utwin-request-id` with a failure,
a stream, or any call while debug is on), logs one debug line per call when
debug is on, and a rate-limited warning per site for refused requests.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from utwin.errors import Code, InvalidArgument, UTwinError, code_of
from utwin.logs import begin_request, current_request_id
from utwin.security.identity import AuthMethod
from utwin.uri import Topic, format_uri
from utwin_proto.uprotocol.core.utwin.v2 import utwin_pb2
from utwin_proto.uprotocol.v1 import umessage_pb2, ustatus_pb2

if TYPE_CHECKING:  # prometheus_client is imported only by a server that keeps metrics
    from utwin.metrics import Metrics

log = logging.getLogger("utwin.service")
# One debug line per call; its own logger so an operator can turn it on alone.
calls_log = logging.getLogger("utwin.calls")
REQUEST_ID_KEY = "utwin-request-id"

_OK = grpc.StatusCode.OK  # looked up once: an enum member's attribute lookup costs a Python call
GRPC_STATUS: dict[Code, grpc.StatusCode] = {code: grpc.StatusCode[code.name] for code in Code}
# What a caller is told of an unexpected error; the server log has its traceback.
INTERNAL_DETAIL = "internal error; see the server log"
SHUTTING_DOWN = "the server is shutting down"
# At most one traceback per site in this many seconds; the others are counted.
LOG_INTERVAL_S = 10.0

Context = grpc.aio.ServicerContext[Any, Any]
Decoder = Callable[[bytes], Any]


async def abort(context: grpc.aio.ServicerContext[object, object], error: UTwinError) -> NoReturn:
    await context.abort(*status_of(error, "a stream"))
    raise AssertionError("context.abort returned")  # pragma: no cover


def status_of(error: UTwinError, site: str) -> tuple[grpc.StatusCode, str]:
    """The status a client is told of a domain error; a failure of the engine stays in the log."""
    if error.code in _UNEXPECTED_CODES:
        return grpc.StatusCode.INTERNAL, _unexpected_detail(site, error)
    return GRPC_STATUS[error.code], error.message


_UNEXPECTED_CODES = frozenset((Code.OK, Code.UNKNOWN, Code.INTERNAL))
# Statuses that refuse what the caller asked (its fault, or the policy's): warned about, rate-limited.
_REFUSALS = frozenset(
    (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
    )
)


class _RateLimitedLog:
    """Logs an exception with its traceback at most once per site and interval, counting the rest."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._quiet_until: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def exception(self, site: str, error: BaseException) -> None:
        more = self._due(site)
        if more is not None:
            log.error("unexpected error in %s%s", site, more, exc_info=error)

    def failure(self, site: str, message: str) -> None:
        """Log a failure that is no bug (the store refusing writes): its message, no traceback."""
        more = self._due(site)
        if more is not None:
            log.error("%s failed: %s%s", site, message, more)

    def refusal(self, site: str, message: str) -> None:
        """Warn of a refused request (no traceback; the caller was told why)."""
        more = self._due(f"{site} refused")
        if more is not None:
            log.warning("%s refused: %s%s", site, message, more)

    def _due(self, site: str) -> str | None:
        """None while site is quiet (counted); else the note of how many were left out."""
        now = time.monotonic()
        if now < self._quiet_until.get(site, 0.0):
            self._suppressed[site] = self._suppressed.get(site, 0) + 1
            return None
        self._quiet_until[site] = now + self._interval_s
        suppressed = self._suppressed.pop(site, 0)
        return f" ({suppressed} more since the last report)" if suppressed else ""


_unexpected_log = _RateLimitedLog(LOG_INTERVAL_S)


def _unexpected_detail(site: str, error: BaseException) -> str:
    _unexpected_log.exception(site, error)
    return INTERNAL_DETAIL


def log_failure(where: str, message: str) -> None:
    """Log a domain failure of a call (rate-limited per site, like unexpected errors)."""
    _unexpected_log.failure(where, message)


def log_refusal(where: str, message: str, context: Context | None = None) -> None:
    """Warn that a write was refused, naming why (rate-limited per site); tell the caller the request id."""
    _unexpected_log.refusal(where, message)
    if context is not None:
        attach_request_id(context)


def attach_request_id(context: Context) -> None:
    """Return the call's request id to the caller, as trailing metadata."""
    context.set_trailing_metadata(((REQUEST_ID_KEY, current_request_id()),))


def log_unexpected(where: str) -> str:
    """Log the exception being handled (rate-limited); the detail to send in its place."""
    error = sys.exc_info()[1]
    return _unexpected_detail(where, error) if error is not None else INTERNAL_DETAIL


def message_decoder(deserializer: Callable[[bytes], Any] | None) -> Decoder | None:
    """A decoder naming the request type on failure, for a generated `FromString`; else None."""
    message_type = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    if deserializer is None or descriptor is None:
        return None
    from_string = deserializer
    failure = f"request: not a valid {descriptor.name} encoding"

    def decode(raw: bytes) -> Any:
        try:
            return from_string(raw)
        except DecodeError:
            raise InvalidArgument(failure) from None

    return decode


class ErrorGate:
    """Wraps the handlers of every service; see the module docstring."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        # Each call's duration and status go to metrics; None: no clock read, no figures kept.
        self.metrics = metrics
        self._closing = False
        # Unary calls let in so far, of every service: ingest stores in small turns while it moves.
        self.unary_calls = 0
        self._ending_streams: dict[asyncio.Task[Any], _OpenStream] = {}

    def service(
        self,
        service_name: str,
        handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
        end_at_shutdown: Collection[str] = (),
    ) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """The handlers behind the gate; methods in end_at_shutdown end UNAVAILABLE when shutdown starts."""
        return {
            method: self.handler(f"{service_name}/{method}", handler, method in end_at_shutdown)
            for method, handler in handlers.items()
        }

    def handler(
        self, site: str, handler: grpc.RpcMethodHandler[Any, Any], ends_at_shutdown: bool = False
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # A generated deserializer moves into the gate; any other (the project's
        # passthrough, which cannot fail) stays with gRPC.
        decode = message_decoder(handler.request_deserializer)
        deserializer = None if decode is not None else handler.request_deserializer
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(site, handler.unary_unary, decode), deserializer, serializer
            )
        if handler.unary_stream is not None:
            responses = self._streaming(site, handler.unary_stream, decode, ends_at_shutdown)
            return grpc.unary_stream_rpc_method_handler(responses, deserializer, serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(site, handler.stream_unary, _stream_decoder(decode)), deserializer, serializer
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(site, handler.stream_stream, _stream_decoder(decode), ends_at_shutdown),
            deserializer,
            serializer,
        )

    async def end_streams(self, timeout_s: float) -> None:
        """End the open streams marked to end at shutdown, waiting up to timeout_s; refuse new ones.

        A stream whose caller stopped reading cannot send its status until the
        server's stop cancels its call, so the wait is bounded.
        """
        self._closing = True
        ending = list(self._ending_streams)
        for task, stream in self._ending_streams.items():
            # A stream inside gRPC's send is not cancelled there (gRPC would take it
            # for the call's end and send nothing): it ends as soon as the send is done.
            if not stream.sending:
                task.cancel()
        if ending and timeout_s > 0:
            await asyncio.wait(ending, timeout=timeout_s)

    # Each wrapper answers a failure after leaving its except block, with the
    # request dropped: the abort error lives on in the call's state, and its
    # traceback must keep neither the failure's frames nor the request's bytes.

    def _unary(
        self, site: str, behaviour: Callable[..., Any], decode: Callable[[Any], Any] | None
    ) -> Callable[..., Any]:
        metrics = self.metrics
        # An OK call, the common case, adds to its method's histogram here, without _end_call.
        ok_durations = metrics.durations_of(site, "OK") if metrics is not None else None
        if decode is None:

            async def gated(request: Any, context: Context) -> Any:
                self.unary_calls += 1
                started = _begin_call(metrics)
                try:
                    response = await behaviour(request, context)
                except grpc.aio.AbortError:
                    _end_call(metrics, site, request, context, started, None)
                    raise
                except Exception as error:
                    code, detail = _failure_status(site, error)
                else:
                    if started:
                        if ok_durations is None or calls_log.isEnabledFor(logging.DEBUG):
                            _end_call(metrics, site, request, context, started, _OK, response=response)
                        else:
                            ok_durations.observe(time.perf_counter() - started)
                    return response
                _end_call(metrics, site, request, context, started, code, detail)
                del request
                await _abort(context, code, detail)

            return gated

        async def decoding(request: Any, context: Context) -> Any:
            self.unary_calls += 1
            started = _begin_call(metrics)
            decoded = None
            try:
                decoded = decode(request)
                response = await behaviour(decoded, context)
            except grpc.aio.AbortError:
                _end_call(metrics, site, decoded, context, started, None)
                raise
            except Exception as error:
                code, detail = _failure_status(site, error)
            else:
                if started:
                    if ok_durations is None or calls_log.isEnabledFor(logging.DEBUG):
                        _end_call(metrics, site, decoded, context, started, _OK)
                    else:
                        ok_durations.observe(time.perf_counter() - started)
                return response
            _end_call(metrics, site, decoded, context, started, code, detail)
            del request, decoded
            await _abort(context, code, detail)

        return decoding

    def _streaming(
        self,
        site: str,
        behaviour: Callable[..., Any],
        decode: Callable[[Any], Any] | None,
        ends_at_shutdown: bool,
    ) -> Callable[..., Any]:
        metrics = self.metrics
        if inspect.isasyncgenfunction(behaviour):

            async def gated_responses(request: Any, context: Context) -> AsyncIterator[Any]:
                started = _begin_call(metrics)
                attach_request_id(context)  # once per stream: a stream's statuses come late
                try:
                    stream = self._admit(ends_at_shutdown)
                    async for response in behaviour(request if decode is None else decode(request), context):
                        if stream is None:
                            yield response
                            continue
                        stream.sending = True
                        yield response
                        stream.sending = False
                        if self._closing:
                            raise _ShuttingDown
                    _end_call(metrics, site, None, context, started, grpc.StatusCode.OK)
                    return
                except asyncio.CancelledError:
                    code, detail = self._cancelled_status(ends_at_shutdown)
                except grpc.aio.AbortError:
                    _end_call(metrics, site, None, context, started, None)
                    raise
                except Exception as error:
                    code, detail = _failure_status(site, error)
                finally:
                    self._leave()
                _end_call(metrics, site, None, context, started, code, detail)
                del request
                await _abort(context, code, detail)

            return gated_responses

        async def gated_writes(request: Any, context: Context) -> None:
            started = _begin_call(metrics)
            attach_request_id(context)  # once per stream: a stream's statuses come late
            try:
                self._admit(ends_at_shutdown)
                await behaviour(request if decode is None else decode(request), context)
                _end_call(metrics, site, None, context, started, grpc.StatusCode.OK)
                return
            except asyncio.CancelledError:
                code, detail = self._cancelled_status(ends_at_shutdown)
            except grpc.aio.AbortError:
                _end_call(metrics, site, None, context, started, None)
                raise
            except Exception as error:
                code, detail = _failure_status(site, error)
            finally:
                self._leave()
            _end_call(metrics, site, None, context, started, code, detail)
            del request
            await _abort(context, code, detail)

        return gated_writes

    def _admit(self, ends_at_shutdown: bool) -> _OpenStream | None:
        """The stream's record when it ends at shutdown (refused once shutdown started)."""
        if not ends_at_shutdown:
            return None
        if self._closing:
            raise _ShuttingDown
        task = asyncio.current_task()
        if task is None:
            return None
        stream = self._ending_streams[task] = _OpenStream()
        return stream

    def _leave(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._ending_streams.pop(task, None)

    def _cancelled_status(self, ends_at_shutdown: bool) -> tuple[grpc.StatusCode, str]:
        """UNAVAILABLE for a stream ended by shutdown; any other cancellation goes on."""
        if not (ends_at_shutdown and self._closing):
            raise  # called from an except block: the cancellation goes on
        return grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN


class _OpenStream:
    """A stream that ends at shutdown; `sending` while gRPC sends its last response."""

    __slots__ = ("sending",)

    def __init__(self) -> None:
        self.sending = False


class _ShuttingDown(Exception):
    """A stream that ends at shutdown was opened after shutdown started."""


def _failure_status(site: str, error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status answering a handler's failure (an abort already made goes on)."""
    if isinstance(error, grpc.aio.AbortError):
        raise error
    if isinstance(error, UTwinError):
        return status_of(error, site)
    if isinstance(error, _ShuttingDown):
        return grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN
    if isinstance(error, NotImplementedError):  # as generated base servicers raise
        return grpc.StatusCode.UNIMPLEMENTED, f"{site}: not implemented by this server"
    return grpc.StatusCode.INTERNAL, _unexpected_detail(site, error)


def _begin_call(metrics: Metrics | None) -> float:
    """Give the call its request id; its start time when it is timed (metrics, or debug), else 0."""
    begin_request()
    timed = metrics is not None or calls_log.isEnabledFor(logging.DEBUG)
    return time.perf_counter() if timed else 0.0


def _end_call(
    metrics: Metrics | None,
    site: str,
    request: Any,
    context: Context,
    started: float,
    code: grpc.StatusCode | None,
    detail: str = "",
    response: Any = None,
) -> None:
    """Warn of a refusal; count the call in metrics; write its debug line if debug is on.

    The caller gets the request id with a failure, and with every call while debug
    is on (then every call has a line); an OK call skips it: trailing metadata
    costs each call about 1% of its instructions.
    code None: the handler aborted the call itself, with the code the context holds.
    """
    debug = bool(started) and (metrics is None or calls_log.isEnabledFor(logging.DEBUG))
    if code is None:
        code, detail = _aborted_status(context)
    elif code is not grpc.StatusCode.OK or debug:
        attach_request_id(context)
    if code is not grpc.StatusCode.OK and code in _REFUSALS:
        _unexpected_log.refusal(site, detail)
    if not started:
        return
    elapsed_s = time.perf_counter() - started
    if metrics is not None:
        # `_name_` (Enum's documented sunder attribute) is a plain attribute; `.name` is a Python call.
        metrics.call_done(site, code._name_, elapsed_s)
    if not debug:
        return
    fields: dict[str, Any] = {
        "method": site,
        "code": code.name,
        "duration_ms": round(elapsed_s * 1000, 3),
    }
    fields.update(_caller_fields())
    fields.update(_request_fields(site, request))
    if response is not None and site.endswith("uTwin/SetLastMessage"):
        # Its status travels in the answer (a UStatus), the gRPC status being OK.
        fields["ustatus"] = code_of(ustatus_pb2.UStatus.FromString(response).code).name
    described = " ".join(f"{name}={value}" for name, value in fields.items() if name != "method")
    calls_log.debug("call %s %s", site, described, extra=fields)


_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def _aborted_status(context: Context) -> tuple[grpc.StatusCode, str]:
    """The status a handler aborted its call with (the context may hold the bare number)."""
    code: Any = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = _STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    details = context.details()
    return code, details.decode() if isinstance(details, bytes) else str(details or "")


def _caller_fields() -> dict[str, str]:
    from utwin.service.auth import current_principal  # here: auth imports this module

    principal = current_principal()
    return {} if principal.method is AuthMethod.NONE else {"caller": principal.name}


def _request_fields(site: str, request: Any) -> dict[str, Any]:
    """What the call was about, where cheap to tell: a topic count or URI, a twin id; never a payload."""
    try:
        if site.endswith("uTwin/GetLastMessages") and isinstance(request, bytes):
            return {"topics": len(utwin_pb2.GetLastMessagesRequest.FromString(request).topics.uris)}
        if site.endswith("uTwin/SetLastMessage") and isinstance(request, bytes):
            source = umessage_pb2.UMessage.FromString(request).attributes.source
            topic = Topic(source.authority_name, source.ue_id, source.ue_version_major, source.resource_id)
            return {"topic": format_uri(topic)}
    except Exception:  # a request too broken to describe was answered already; its line says less
        return {}
    twin_id = getattr(request, "twin_id", None)
    return {"twin": twin_id} if twin_id else {}


async def _abort(context: Context, code: grpc.StatusCode, detail: str) -> NoReturn:
    await context.abort(code, detail)
    raise AssertionError("context.abort returned")  # pragma: no cover


async def close_requests(requests: AsyncIterator[Any]) -> None:
    """Close a request stream's generator, which otherwise waits at its yield holding the last request.

    gRPC's generator sits in a reference cycle of the call, so without this a
    request (up to max_frame_bytes) outlives its stream until a cyclic collection.
    """
    if isinstance(requests, AsyncGenerator):
        await requests.aclose()


def _stream_decoder(decode: Decoder | None) -> Callable[[Any], Any] | None:
    """For a request stream: a decoder of the stream, decoding each request as it comes."""
    if decode is None:
        return None

    async def decoded(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for raw in requests:
            yield decode(raw)

    return decoded


@functools.lru_cache(maxsize=1024)
def ustatus_bytes(code: Code, detail: str) -> bytes:
    """A serialized UStatus (cached: a handful of distinct statuses repeat endlessly)."""
    return ustatus(code, detail).SerializeToString()


def ustatus(code: Code, detail: str) -> ustatus_pb2.UStatus:
    status = ustatus_pb2.UStatus(code=int(code))  # type: ignore[arg-type]
    if detail:
        status.message = detail
    return status
