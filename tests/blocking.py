"""Blocking views of asynchronous domain and store objects, for tests written as plain calls.

The domain and the store are asynchronous; most of their rules are easier to
read as straight-line tests. `Blocking(target, loop)` runs each coroutine
method of target to completion on loop, and collects each asynchronous
generator method (a scan) into a list. Everything else passes through.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any


class Blocking:
    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.target, name)
        if inspect.iscoroutinefunction(attribute):
            return lambda *args, **kwargs: self._loop.run_until_complete(attribute(*args, **kwargs))
        if inspect.isasyncgenfunction(attribute):
            return lambda *args, **kwargs: self._loop.run_until_complete(_collect(attribute(*args, **kwargs)))
        return attribute


async def _collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


def run(loop: asyncio.AbstractEventLoop, coroutine: Any) -> Any:
    return loop.run_until_complete(coroutine)
