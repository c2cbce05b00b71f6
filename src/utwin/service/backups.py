"""Backups of the embedded store for the CLI: restoring one into a data folder (offline)."""

from utwin.store.rocks import restore_backup

__all__ = ["restore_backup"]
