"""Storage: a bytes-in, bytes-out `Store` and its RocksDB implementation.

The store knows nothing of gRPC or of uProtocol messages; key and value
layouts of each key space live in `keys`.
"""

from utwin.store.base import Store, WriteBatchOps
from utwin.store.rocks import RocksStore
from utwin.store.sync import GroupSync

__all__ = ["GroupSync", "RocksStore", "Store", "WriteBatchOps"]
