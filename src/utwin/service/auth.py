"""Authentication at the gRPC edge: one server interceptor in front of every handler.

The interceptor wraps each method's handler: before the handler runs, the
call's client certificate (from the TLS auth context) and `authorization`
metadata become a `Principal`, or the call ends UNAUTHENTICATED and the handler
never runs. Health and reflection stay open. Handlers read the caller with
`current_principal()`.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

from utwin.config import AuthMode, Config
from utwin.errors import Unauthenticated
from utwin.security.identity import (
    ANONYMOUS,
    Authenticator,
    Principal,
    TokenRules,
    TokenVerifier,
    load_verification_keys,
)
from utwin.service.status import abort

# Methods anyone may call: load balancers and tooling must not need credentials.
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
AUTHORIZATION_KEY = "authorization"
_PEM_CERT_PROPERTY = "x509_pem_cert"

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("utwin_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    """The caller of the call being handled (ANONYMOUS when authentication is off)."""
    return _principal.get()


def authenticator_for(config: Config) -> Authenticator:
    """The Authenticator the settings describe (jwt_keys, jwt_issuer, jwt_audience, auth)."""
    verifier = None
    if config.jwt_keys is not None:
        rules = TokenRules(issuer=config.jwt_issuer, audience=config.jwt_audience)
        verifier = TokenVerifier(load_verification_keys(config.jwt_keys), rules)
    return Authenticator(verifier, required=config.auth is AuthMode.REQUIRED)


def call_authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The `authorization` metadata value of a call, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_KEY:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def call_certificate(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    """The client certificate (PEM) of the call's connection, if it showed one."""
    return next(iter(context.auth_context().get(_PEM_CERT_PROPERTY, ())), None)


if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic; only its stub is
    _ServerInterceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_ServerInterceptor):
    """Authenticates every call but health and reflection before its handler runs.

    `authenticator` may be replaced (as when jwt_keys are reloaded); calls already
    authenticated keep their principal.
    """

    def __init__(self, authenticator: Authenticator, client_certificates: bool = True) -> None:
        self.authenticator = authenticator
        # Without mTLS no call carries a client certificate: skip reading the auth context for one.
        self._client_certificates = client_certificates
        # The guarded handler of each method: the server's handlers do not change once it serves.
        self._guarded: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method: str = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is not None:
            return guarded
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        guarded = self._guarded[method] = _guarded(handler, self._authenticate)
        return guarded

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        # A token names the caller whatever certificate opened the connection: read the
        # certificate (a costly auth context) only for calls without one.
        authorization = call_authorization(context)
        certificate = (
            call_certificate(context) if authorization is None and self._client_certificates else None
        )
        try:
            return self.authenticator.authenticate(certificate, authorization)
        except Unauthenticated as error:
            await abort(context, error)


Authenticate = Callable[[grpc.aio.ServicerContext[Any, Any]], Any]


def _guarded(handler: Any, authenticate: Authenticate) -> Any:
    """The same method handler, authenticating first and exposing the principal to the behaviour."""
    if handler.request_streaming and handler.response_streaming:
        behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    wrapped = _streaming(behavior, authenticate) if inspect.isasyncgenfunction(behavior) else None
    return factory(
        wrapped or _awaiting(behavior, authenticate),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


# gRPC runs each call in its own asyncio task, whose context is a copy: the principal set
# here is seen by this call's handler only, and never outlives the call.


def _awaiting(behavior: Any, authenticate: Authenticate) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _principal.set(await authenticate(context))
        return await behavior(request, context)

    return guarded


def _streaming(behavior: Any, authenticate: Authenticate) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        _principal.set(await authenticate(context))
        async for response in behavior(request, context):
            yield response

    return guarded
