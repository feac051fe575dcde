"""Asterisk Manager Interface adapter: framing (:mod:`.framing`), the connection
(:mod:`.client`), events to calls (:mod:`.mapping`), settings (:mod:`.config`) and the
adapter (:mod:`.adapter`)."""

from .adapter import AsteriskAmiAdapter
from .config import AmiConfig

__all__ = ["AmiConfig", "AsteriskAmiAdapter"]
