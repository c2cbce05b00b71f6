"""utwin: the last known state of every device, served over gRPC from RocksDB.

Modules, from the bottom up: `errors`, `config`, `uri`, `uuid` (value rules);
`store` (RocksDB); `twin` (uTwin domain) and `digitwin` (WoT twins);
`federation` (asking peer instances); `service` (gRPC); `cli` and `cli_things`.
"""

__version__ = "0.1.0"
