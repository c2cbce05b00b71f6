"""Twin state in memory: loaded on first access, least recently used unloaded beyond a bound.

The store always holds everything (writes go through to it before they are
acknowledged), so unloading a twin loses nothing: the next access loads it
again with one point read and one prefix scan.

A twin is *used* when `get` returns it (its values are read or written), when
it is created, and when the TD of a loaded twin is replaced. `peek` is not a
use, so work that does not serve a caller (catching the bridge up) leaves the
order as it is.

A twin is loaded under its lock (`locks`): loads never interleave with a
write of the same twin, so the copy kept is never older than the store. Code
already holding the twin's lock loads with `get_held`; all else with `get`.

On a store other frontends write too, each loaded twin carries the version
it reflects (the store bumps a twin's version at every write of it). Under
the twin's lock, a copy whose version is not the store's is loaded again;
a read without the lock first asks the store for the version (one call), so
it never serves a copy older than a write acknowledged before the read
began. When a hold ends, a copy that was current when it began follows the
writes made under it (this process's writes update the copy as they go);
after a write whose outcome is unknown the copy is dropped.
"""

from __future__ import annotations

from collections import OrderedDict

from utwin.digitwin import records
from utwin.digitwin.ids import TwinId
from utwin.digitwin.locks import TwinLocking
from utwin.digitwin.model import ThingSummary, Value, ValueKind
from utwin.store.base import RecordStore


class LoadedTwin:
    """One twin's TD summary and its current values, by kind and name."""

    def __init__(self, twin: TwinId, summary: ThingSummary) -> None:
        self.twin = twin
        self.twin_text = twin.text
        self.summary = summary
        self.values: dict[ValueKind, dict[str, Value]] = {kind: {} for kind in ValueKind}
        self.version: int | None = None  # the store's version of the twin this copy reflects


class TwinCache:
    """Loaded twins in least-recently-used order, at most `max_loaded` of them."""

    def __init__(self, store: RecordStore, locks: TwinLocking, max_loaded: int) -> None:
        self._store = store
        self._locks = locks
        locks.on_release(self._hold_ended)
        self._max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[TwinId, LoadedTwin] = OrderedDict()
        self.loads = 0

    @property
    def loaded_count(self) -> int:
        return len(self._loaded)

    @property
    def loaded_twins(self) -> list[TwinId]:
        """The loaded twins, least recently used first."""
        return list(self._loaded)

    def peek(self, twin: TwinId) -> LoadedTwin | None:
        """The twin if it is loaded, without loading it or counting a use."""
        return self._loaded.get(twin)

    async def get(self, twin: TwinId) -> LoadedTwin | None:
        """The twin, loaded from the store if needed; None if it does not exist.

        The caller must not hold the twin's lock (a load takes it)."""
        loaded = self._loaded.get(twin)
        if loaded is not None and (
            loaded.version is None or loaded.version == await self._locks.version_now(twin)
        ):
            self._loaded.move_to_end(twin)
            return loaded
        async with self._locks.hold_one(twin):
            return await self.get_held(twin)

    async def get_held(self, twin: TwinId) -> LoadedTwin | None:
        """As `get`, for a caller holding the twin's lock."""
        loaded = self._loaded.get(twin)
        version = self._locks.version_held(twin)
        if loaded is not None and loaded.version == version:
            self._loaded.move_to_end(twin)
            return loaded
        record = await self._store.get(records.td_key(twin))
        if record is None:
            self._loaded.pop(twin, None)
            return None
        loaded = LoadedTwin(twin, records.decode_summary(record))
        loaded.version = version
        prefix = records.values_prefix(twin)
        async for key, value in self._store.scan(prefix):
            kind, name = records.split_value_key(key, len(prefix))
            loaded.values[kind][name] = records.decode_value(value)
        self.loads += 1
        self._remember(loaded)
        return loaded

    def replace_summary(self, twin: TwinId, summary: ThingSummary) -> None:
        """A new TD for a twin: update it if loaded, as a use (values are kept either way)."""
        loaded = self._loaded.get(twin)
        if loaded is not None:
            loaded.summary = summary
            self._loaded.move_to_end(twin)

    def add_new(self, loaded: LoadedTwin) -> None:
        """A twin just created: its values are all in `loaded`, so it needs no load.

        Called under the twin's lock, after the write that created it."""
        loaded.version = self._locks.version_held(loaded.twin)
        self._remember(loaded)

    def drop(self, twin: TwinId) -> None:
        self._loaded.pop(twin, None)

    def _hold_ended(self, twin: TwinId, first_version: int, last_version: int, uncertain: bool) -> None:
        loaded = self._loaded.get(twin)
        if loaded is None:
            return
        if uncertain:
            del self._loaded[twin]
        elif loaded.version == first_version:
            loaded.version = last_version

    def _remember(self, loaded: LoadedTwin) -> None:
        self._loaded[loaded.twin] = loaded
        self._loaded.move_to_end(loaded.twin)
        while len(self._loaded) > self._max_loaded:
            self._loaded.popitem(last=False)
