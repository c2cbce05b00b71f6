"""The Redis protocol's bytes as the store writes them: commands packed whole, script calls pre-encoded.

`pack` packs whole commands (hiredis in C when present, Python otherwise:
the same bytes). A first round's script calls are built from arguments
already in the protocol's form (`EncodedCall`, `bulk`, `length_head`), so
that a frontend encodes a device's key once and formats no length twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from utwin.store.redis_scripts import Script

# One command: its name and arguments.
Command = tuple[bytes | str | int, ...]


def _load_hiredis_pack() -> Callable[[tuple[Any, ...]], bytes] | None:
    """hiredis's command packer (C), or None: packing in Python costs the client more per batch."""
    try:
        import hiredis
    except ImportError:
        return None
    return cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)  # its stub types a 1-tuple


_hiredis_pack = _load_hiredis_pack()


def pack_in_python(commands: list[Command]) -> bytes:
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n" % len(data))
            parts.append(data)
            parts.append(b"\r\n")
    return b"".join(parts)


def pack(commands: list[Command]) -> bytes:
    if _hiredis_pack is None:
        return pack_in_python(commands)
    return b"".join([_hiredis_pack(command) for command in commands])


class EncodedCall:
    """A script call's ARGV in the protocol's form (each argument `bulk`-encoded), and how many."""

    __slots__ = ("argc", "parts")

    def __init__(self) -> None:
        self.argc = 0
        self.parts: list[bytes] = []


_LENGTH_HEADS: dict[int, bytes] = {}  # b"\r\n$<size>\r\n" by size, below LENGTH_HEADS_KEPT
LENGTH_HEADS_KEPT = 1 << 16
CRLF = b"\r\n"


def length_head(size: int) -> bytes:
    """What separates an argument from the next one, of `size` bytes: the end of the first and the
    length of the next (kept per size: formatting it again cost more than the rest of an entry)."""
    head = _LENGTH_HEADS.get(size)
    if head is None:
        head = b"\r\n$%d\r\n" % size
        if size < LENGTH_HEADS_KEPT:
            _LENGTH_HEADS[size] = head
    return head


def bulk(argument: bytes) -> bytes:
    """One argument as the protocol sends it; a frontend encodes a device's key once, not per call."""
    return b"$%d\r\n%b\r\n" % (len(argument), argument)


def script_call(script: Script, call: EncodedCall, encoded_head: bytes = b"", head_count: int = 0) -> bytes:
    """EVALSHA of script with no key declared, ARGV the head then the call's: the bytes hiredis
    would pack, without its formatting of each argument again."""
    command = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n0\r\n" % (
        3 + head_count + call.argc,
        script.sha.encode(),
    )
    return b"".join([command, encoded_head, *call.parts])
