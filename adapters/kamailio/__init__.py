"""Kamailio ``evapi`` adapter: real SIP calls held by Kamailio and routed by the gateway.

``framing`` (netstrings), ``mapping`` (evapi JSON <-> normalized events and SIP answers),
``client`` (the adapter: connection, resync, decisions back).
"""

from .client import KamailioAdapter, KamailioConfig

__all__ = ["KamailioAdapter", "KamailioConfig"]
