"""Denial logging: once per principal and resource per interval, with principal, method and resource."""

from __future__ import annotations

import logging

import pytest

from utwin.security.denials import DenialLog


def test_denial_logged_once_per_principal_and_resource_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """Repeats within the minute are not logged; another resource or principal is; after a minute, again."""
    now = [1000.0]
    denials = DenialLog(interval_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "utwin.security"):
        logged = [
            denials.denied("alice", "GetLastMessages", "up://b/1/1/8000"),
            denials.denied("alice", "SetLastMessage", "up://b/1/1/8000"),
            denials.denied("alice", "GetLastMessages", "up://b/1/1/8001"),
            denials.denied("bob", "GetLastMessages", "up://b/1/1/8000"),
        ]
        now[0] += 60.0
        logged.append(denials.denied("alice", "GetLastMessages", "up://b/1/1/8000"))
    assert ([True, False, True, True, True], 4) == (logged, len(caplog.records))


def test_denial_record_names_principal_method_and_resource(caplog: pytest.LogCaptureFixture) -> None:
    """The log line says who was refused what, by which method."""
    with caplog.at_level(logging.WARNING, "utwin.security"):
        DenialLog().denied("spiffe://t/alice", "SetLastMessage", "up://hub/1/1/8000")
    assert "denied: principal 'spiffe://t/alice' method SetLastMessage resource up://hub/1/1/8000" == (
        caplog.records[0].getMessage()
    )


def test_denial_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many distinct refused resources never grow the memory past its bound."""
    from utwin.security import denials as denials_module

    monkeypatch.setattr(denials_module, "DENIALS_KEPT", 10)
    denials = DenialLog(clock=lambda: 0.0, logger=logging.getLogger("utwin.test.quiet"))
    for number in range(50):
        denials.denied("alice", "GetLastMessages", f"up://b/1/1/{0x8000 + number:X}")
    assert len(denials._last_logged) <= 10
