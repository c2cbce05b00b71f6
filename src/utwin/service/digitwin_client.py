"""The blocking DigiTwin client lives in utwin.client.digitwin; this name stays for its importers."""

from __future__ import annotations

from utwin.client.digitwin import DigiTwinClient

__all__ = ["DigiTwinClient"]
