"""Storage: the asynchronous store contracts and their embedded RocksDB implementation.

The store knows nothing of gRPC or of uProtocol messages; key and value
layouts of each key space live in `keys`.
"""

from utwin.store.base import (
    ChangeListener,
    Changes,
    Durable,
    PutResult,
    RecordStore,
    Store,
    TopicStore,
    Verdict,
    WriteBatchOps,
)
from utwin.store.engine import RocksEngine
from utwin.store.rocks import RocksStore
from utwin.store.sync import GroupSync

__all__ = [
    "ChangeListener",
    "Changes",
    "Durable",
    "GroupSync",
    "PutResult",
    "RecordStore",
    "RocksEngine",
    "RocksStore",
    "Store",
    "TopicStore",
    "Verdict",
    "WriteBatchOps",
]
