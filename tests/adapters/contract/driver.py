"""What the adapter contract suite needs from each adapter's test peer: a :class:`Driver`.

One module per adapter in :mod:`.drivers` defines ``DRIVER``, a class implementing this
protocol; the suite (``test_contract.py``) finds every module there and runs the same tests
against each. A driver owns the vendor's side: the peer (a scripted AMI or ESL server, a
real Kamailio + SIPp, a real Postfix, an HTTP client signing webhooks ...), how the vendor
offers and ends an interaction, and what the vendor observed of the gateway's decisions.

Interactions are identified by the ids the test chooses; the driver maps them to whatever
its vendor uses (a call's Uniqueid, a Message-ID ...) so that the gateway's
``interaction_id`` equals :meth:`Driver.interaction_id` of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from gateway.events import Channel

from .harness import ContractGateway


class Driver(Protocol):
    #: the ``adapter:`` name under test
    adapter: ClassVar[str]
    #: the channel its offers carry
    channel: ClassVar[Channel]
    #: the adapter holds a connection to its vendor (outage / recovery tests apply)
    connection_based: ClassVar[bool]
    #: the vendor can offer to the gateway's queue (not only to an agent its ACD chose) and
    #: learns a late decision about it
    supports_queue: ClassVar[bool]
    # optional: ``can_end: ClassVar[bool]`` (default True) - False for a vendor that cannot
    # end an interaction (a mail relay): the end test is skipped for it

    async def start_peer(self, tmp_path: Path) -> None:
        """Start the vendor's side (before the gateway starts)."""

    async def stop_peer(self) -> None:
        """Stop the vendor's side and release everything (after the gateway stopped)."""

    def settings(self) -> dict[str, Any]:
        """The vendor's YAML settings beyond ``name`` and ``adapter``; agents ``a1``/``a2``."""

    def bind(self, gateway: ContractGateway) -> None:
        """Called once the gateway runs (drivers of HTTP adapters need its address)."""

    def interaction_id(self, ref: str) -> str:
        """The gateway's ``interaction_id`` for the test's interaction ``ref``."""

    async def offer(self, ref: str, *, agent: str | None = None) -> None:
        """The vendor offers interaction ``ref``: to ``agent`` (its ACD chose), else to the
        gateway's queue ``support``. Returns once the vendor's request is answered, or for a
        vendor with no synchronous answer, once it was sent."""

    async def rejected_at_vendor(self, ref: str) -> bool:
        """Whether the vendor has seen the gateway refuse ``ref`` (a 409, a 486, a hang-up of
        the agent leg, a 451 ...). Waits a little for asynchronous ways back."""

    async def assigned_at_vendor(self, ref: str, agent: str) -> bool:
        """Whether the vendor has seen ``ref`` given to ``agent`` (synchronously or by a late
        decision / callback). Waits a little for asynchronous ways back."""

    async def end(self, ref: str) -> None:
        """The vendor ends the interaction (hang-up, chat end ...)."""

    async def outage(self) -> None:
        """Break the link to the vendor (stop the peer / drop the connection)."""

    async def recover(self) -> None:
        """Let the vendor come back (restart the peer on the same address)."""

    async def garbage(self) -> None:
        """Send the adapter malformed input of its protocol (truncated frames, bad JSON ...)."""
