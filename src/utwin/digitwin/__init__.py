"""DigiTwin: WoT digital twins (a TD and a state per registered Thing) over the Store.

Modules: `ids` (twin identity), `model` (shared value types), `td` (TD
validation and the twin TD), `records` (key and value layouts), `state`
(loaded twins, LRU), `locks` (per-twin locks), `directory` (ListThings),
`watch` (notifications), `bridge` (uTwin topics feeding affordances), `twins`
(the `DigiTwin` facade, opened with `await DigiTwin.open(store, settings)`).
No gRPC here.
"""

from utwin.digitwin.directory import ListQuery, ThingEntry
from utwin.digitwin.ids import TwinId, parse_twin_id, twin_id
from utwin.digitwin.model import Value, ValueKind
from utwin.digitwin.twins import DigiTwin, Settings, Update
from utwin.digitwin.watch import Change, ChangeKind, Subscription, WatchFilter

__all__ = [
    "Change",
    "ChangeKind",
    "DigiTwin",
    "ListQuery",
    "Settings",
    "Subscription",
    "ThingEntry",
    "TwinId",
    "Update",
    "Value",
    "ValueKind",
    "WatchFilter",
    "parse_twin_id",
    "twin_id",
]
