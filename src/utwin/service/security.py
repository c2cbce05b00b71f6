"""The server's security parts built from the settings, and their reload on SIGHUP.

`ServerSecurity.from_config` builds what `start_server` wires in: the auth
interceptor, the TLS credentials (None for plaintext), the Guard and the
Authorizer the servicers ask, the credentials of peer links. `reload()` reads
the certificate files, the policy, the JWT keys and the peer link files again;
whatever does not load keeps its previous version in force and the reason is
logged and returned. Open calls are never dropped: they keep their connection
and their principal, and new handshakes and calls use the new files (each
registered peer client opens a new channel and lets the old one drain).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

import grpc

from utwin.config import Config
from utwin.digitwin import DigiTwin
from utwin.errors import InvalidArgument
from utwin.security.guard import Guard
from utwin.service.auth import AuthInterceptor, authenticator_for
from utwin.service.authorize import Authorizer
from utwin.service.tls import PeerTls, ServerTls

log = logging.getLogger("utwin.service")


class PeerLink(Protocol):
    def use_credentials(self, credentials: grpc.ChannelCredentials) -> None:
        """Open new connections with these credentials; calls in flight finish on the old ones."""
        ...


@dataclasses.dataclass
class ServerSecurity:
    config: Config
    interceptor: AuthInterceptor
    tls: ServerTls | None
    guard: Guard
    access: Authorizer
    peer_tls: PeerTls | None
    # The peer clients to hand reloaded peer credentials to (see `peer_credentials`).
    peer_links: list[PeerLink] = dataclasses.field(default_factory=list)

    @classmethod
    def from_config(cls, config: Config, digitwin: DigiTwin | None) -> ServerSecurity:
        guard = Guard.from_config(config)
        return cls(
            config,
            AuthInterceptor(authenticator_for(config), client_certificates=config.tls_client_ca is not None),
            ServerTls.from_config(config),
            guard,
            Authorizer(guard, digitwin, config.max_message_bytes),
            PeerTls.from_config(config),
        )

    @property
    def interceptors(self) -> list[AuthInterceptor]:
        """What the server runs before every handler: nothing when no credential can be checked
        (no jwt_keys, no tls_client_ca), where every caller is anonymous and a token is ignored;
        the interceptor costs ~6% of the instructions of a small call."""
        checks = self.config.jwt_keys is not None or self.config.tls_client_ca is not None
        return [self.interceptor] if checks else []

    @property
    def peer_credentials(self) -> grpc.ChannelCredentials | None:
        """The peer link credentials in force; None for plaintext links."""
        return None if self.peer_tls is None else self.peer_tls.credentials

    def bind(self, server: grpc.aio.Server, listen: str) -> int:
        """Add the listening port: TLS when tls_cert is set, else plaintext; 0 when it cannot bind."""
        if self.tls is None:
            return server.add_insecure_port(listen)
        return server.add_secure_port(listen, self.tls.credentials())

    def reload(self) -> list[str]:
        """Read certificates, policy, JWT keys and peer files again; the reasons of those kept as before."""
        kept: list[str] = []
        if self.tls is not None and (reason := self.tls.reload()) is not None:
            kept.append(reason)
        if self.peer_tls is not None and (reason := self._reload_peer_tls(self.peer_tls)) is not None:
            kept.append(reason)
        if (reason := self.guard.reload()) is not None:
            kept.append(reason)
        try:
            self.interceptor.authenticator = authenticator_for(self.config)
        except InvalidArgument as error:
            log.error("JWT keys not reloaded, the previous ones stay in force: %s", error.message)
            kept.append(error.message)
        return kept

    def _reload_peer_tls(self, peer_tls: PeerTls) -> str | None:
        generation = peer_tls.generation
        reason = peer_tls.reload()
        if peer_tls.generation != generation:
            for link in self.peer_links:
                link.use_credentials(peer_tls.credentials)
        return reason
