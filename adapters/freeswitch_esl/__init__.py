"""FreeSWITCH mod_callcenter over the inbound event socket (DESIGN section 8).

:mod:`.framing` turns the byte stream into messages and events, :mod:`.mapping` says what
mod_callcenter's events mean for the gateway, :mod:`.client` is one authenticated
connection, and :mod:`.adapter` the adapter that keeps it up and acts on both sides.
"""

from .adapter import FreeswitchEslAdapter, FreeswitchEslConfig

__all__ = ["FreeswitchEslAdapter", "FreeswitchEslConfig"]
