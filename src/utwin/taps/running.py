"""The taps a configuration asks for, each of the kind its settings name."""

from __future__ import annotations

from typing import Protocol

from utwin.store import Durable
from utwin.taps.common import TapCounters
from utwin.taps.mqtt import MqttTap
from utwin.taps.settings import TapKind, TapSettings
from utwin.taps.zenoh import ZenohTap
from utwin.twin import UTwin


class Tap(Protocol):
    settings: TapSettings
    counters: TapCounters

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_tap(settings: TapSettings, twin: UTwin, sync: Durable | None) -> Tap:
    if settings.kind is TapKind.ZENOH:
        return ZenohTap(settings, twin, sync)
    return MqttTap(settings, twin, sync)
