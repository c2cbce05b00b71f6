"""The project's error tree; the service layer maps it to status codes in one table.

UTwinError                 code: Code (gRPC / uProtocol numbering)
├── InvalidArgument        bad input; the message names the field
├── NotFound               nothing stored for the key asked
├── PermissionDenied       the caller may not touch this entity
├── ResourceExhausted      a configured limit would be exceeded
│   └── StoreFull          the disk under the data folder is full (writes resume once freed)
├── Unavailable            a peer or the store cannot answer now
│   ├── StoreLocked        another process holds the data folder
│   └── StoreStopped       the storage engine stopped accepting writes (they resume on their own)
├── FailedPrecondition     not in a state for the call (a setting off, an action running)
├── Aborted                a compare failed (an expected version) or a newer call took over
├── DeadlineExceeded       an answer did not come in time
├── Unauthenticated        credentials missing, expired, forged or not for this service
└── StoreError             the storage engine failed (INTERNAL)
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Status codes, numbered as gRPC's status codes and uProtocol's UCode."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_CODES = {code.value: code for code in Code}


def code_of(number: int) -> Code:
    """The Code a status number names; UNKNOWN for a number outside the table (as from a newer peer)."""
    return _CODES.get(number, Code.UNKNOWN)


class UTwinError(Exception):
    """Root of the project's errors: a status code and a message for people."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(UTwinError):
    code = Code.INVALID_ARGUMENT


class NotFound(UTwinError):
    code = Code.NOT_FOUND


class PermissionDenied(UTwinError):
    code = Code.PERMISSION_DENIED


class ResourceExhausted(UTwinError):
    code = Code.RESOURCE_EXHAUSTED


class FailedPrecondition(UTwinError):
    """The request is well formed, but the service is not in a state to do it (a setting is off)."""

    code = Code.FAILED_PRECONDITION


class Unavailable(UTwinError):
    code = Code.UNAVAILABLE


class StoreLocked(Unavailable):
    """The data folder is open in another process (RocksDB's LOCK file)."""


class StoreFull(ResourceExhausted):
    """The disk holding the data folder has no space left for a write."""


class StoreStopped(Unavailable):
    """The storage engine refuses writes after a failure, until the store resumes them."""


class Aborted(UTwinError):
    code = Code.ABORTED


class DeadlineExceeded(UTwinError):
    code = Code.DEADLINE_EXCEEDED


class Unauthenticated(UTwinError):
    """The caller's credentials could not be verified; the message never repeats a credential."""

    code = Code.UNAUTHENTICATED


class StoreError(UTwinError):
    code = Code.INTERNAL
