"""Lean connections to one Redis node, for the store's hot path: packed commands out, replies in.

A `NodeLink` is one socket with a hiredis reader fed straight from the
transport: a request is one write of packed commands and one future that the
socket's data completes once the last reply has arrived. redis-py's own
connections, the way the store used them, cost a frontend several times more
CPU per call (a pool under a lock, a timer task per write, a parse call and
a timeout scope per reply). One request at a time on a link; `LinkPool`
keeps a node's idle links. Errors are redis-py's classes, so that the router
reads a redirection or a lost connection the same way whichever client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# hiredis's stub types the command as a 1-tuple
_pack_command = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)

IDLE_LINKS_KEPT = 32  # per node: more idle sockets than this are closed when released


@dataclass(frozen=True)
class LinkSettings:
    """How to reach and authenticate to a node, read from the redis-py client options."""

    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None
    connect_timeout_s: float
    reply_timeout_s: float

    @classmethod
    def from_client_options(cls, options: dict[str, Any]) -> LinkSettings:
        context: ssl.SSLContext | None = None
        if options.get("ssl"):
            context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            if options.get("ssl_certfile"):
                context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
        return cls(
            username=options.get("username"),
            password=options.get("password"),
            ssl_context=context,
            connect_timeout_s=float(options.get("socket_connect_timeout", 2.0)),
            reply_timeout_s=float(options.get("socket_timeout", 5.0)),
        )


def reply_error(reply: hiredis.ReplyError) -> ResponseError:
    """The redis-py exception a node's error reply stands for (MovedError, AskError, ...)."""
    error = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]  # untyped in redis-py
    return error if isinstance(error, ResponseError) else ResponseError(str(reply))


class _LinkProtocol(asyncio.Protocol):
    """Feeds a hiredis reader from the socket and completes the request waiting for replies."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any]]] = deque()
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport, from create_connection

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting:
            future, wanted, replies = self.waiting[0]
            while len(replies) < wanted:
                reply = self.reader.gets()
                if reply is False:
                    return
                replies.append(reply)
            self.waiting.popleft()
            if not future.done():
                future.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"connection to the node lost: {exc or 'closed by the node'}")
        self._fail_waiting(self.lost)

    def _fail_waiting(self, error: Exception) -> None:
        while self.waiting:
            future, _, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


@dataclass(frozen=True)
class Pending:
    """A request written on a link: the replies to come, and the timer that fails it if they do not."""

    future: asyncio.Future[list[Any]]
    timer: asyncio.TimerHandle


class NodeLink:
    """One socket to one node, one request at a time; closed on any failure (replies may be unread)."""

    def __init__(self, protocol: _LinkProtocol, reply_timeout_s: float) -> None:
        self._protocol = protocol
        self._reply_timeout_s = reply_timeout_s

    @classmethod
    async def open(cls, host: str, port: int, settings: LinkSettings) -> NodeLink:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                _, protocol = await loop.create_connection(
                    _LinkProtocol, host, port, ssl=settings.ssl_context
                )
        except (OSError, TimeoutError) as error:
            raise RedisConnectionError(f"cannot connect to {host}:{port}: {error}") from error
        link = cls(protocol, settings.reply_timeout_s)
        if settings.password is not None:
            login: tuple[str, ...] = (settings.password,)
            if settings.username is not None:
                login = (settings.username, settings.password)
            (answer,) = await link.receive(link.send(_pack_command((b"AUTH", *login)), 1))
            if isinstance(answer, Exception):
                link.close()
                raise AuthenticationError(str(answer))
        return link

    @property
    def usable(self) -> bool:
        transport = self._protocol.transport
        return self._protocol.lost is None and transport is not None and not transport.is_closing()

    def send(self, payload: bytes, replies: int) -> Pending:
        """Write payload (`replies` packed commands) now; `receive` waits for the replies."""
        protocol = self._protocol
        if not self.usable or protocol.transport is None:
            raise protocol.lost or RedisConnectionError("connection to the node closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        protocol.waiting.append((future, replies, []))
        protocol.transport.write(payload)
        return Pending(future, loop.call_later(self._reply_timeout_s, _time_out, future))

    async def receive(self, pending: Pending) -> list[Any]:
        """Each reply of a send, an error reply as a redis-py exception; ConnectionError or
        TimeoutError (and the link closed) when they do not all come."""
        try:
            answers = await pending.future
        except BaseException:
            self.close()  # a late reply would be read as the next request's
            raise
        finally:
            pending.timer.cancel()
        return [reply_error(reply) if isinstance(reply, hiredis.ReplyError) else reply for reply in answers]

    def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.close()
        self._protocol._fail_waiting(RedisConnectionError("connection to the node closed"))


def _time_out(future: asyncio.Future[list[Any]]) -> None:
    if not future.done():
        future.set_exception(RedisTimeoutError("the node did not answer in time"))


class LinkPool:
    """A node's idle links: taken for one request, given back after a full answer."""

    def __init__(self, host: str, port: int, settings: LinkSettings) -> None:
        self._host = host
        self._port = port
        self._settings = settings
        self._idle: list[NodeLink] = []

    async def take(self) -> NodeLink:
        while self._idle:
            link = self._idle.pop()
            if link.usable:
                return link
        return await NodeLink.open(self._host, self._port, self._settings)

    def give_back(self, link: NodeLink) -> None:
        if link.usable and len(self._idle) < IDLE_LINKS_KEPT:
            self._idle.append(link)
        else:
            link.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for link in idle:
            with contextlib.suppress(OSError):
                link.close()
