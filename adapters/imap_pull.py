"""``imap_pull``: the pull-inbox mode: customer e-mail waits in a shared IMAP mailbox and the
gateway takes it from there (DESIGN section 8).

The adapter logs in, selects ``mailbox`` and offers every unseen message to ``queue`` (as
:mod:`adapters.mail` turns it into an offer). A message the gateway took (assigned, or
waiting in a ``wait`` queue) is flagged ``\\Seen`` plus ``keyword`` (``$CtiGateway`` by
default), so people and other tools see it is being handled; a message that could not be
placed (every agent full, not ready ...) stays unseen and is offered again as soon as an
agent's capacity changes (and at the latest every ``poll_interval_s``). New mail is noticed
with IDLE (the server tells within a second or so) or, where the server lacks IDLE, by
polling every ``poll_interval_s``.

Nothing is lost or offered twice, across restarts, reconnects and a UIDVALIDITY change:

* the offer's event id is the Message-ID (see :mod:`adapters.mail`), so a message offered
  but not yet flagged when the gateway stopped is a ``duplicate`` next time: it is flagged,
  not offered again;
* the mailbox's UIDVALIDITY and the highest UID taken are kept in the gateway's journal
  (``save_adapter_state``); after a UIDVALIDITY change (the mailbox was re-created) the
  adapter logs it and rescans everything unseen under the new UIDs, and the Message-IDs keep
  it from offering anything twice;
* messages are fetched with ``BODY.PEEK[]`` (fetching never marks them seen by itself), and
  flagged only after the decision is journaled.

The IMAP client is IMAPClient (BSD licence; synchronous, so each call runs in a worker
thread). aioimaplib would be asyncio-native, but it is GPL-3.0-only, which this Apache-2.0
product does not take on as a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import structlog
from imapclient import IMAPClient
from pydantic import Field, SecretStr, model_validator

from gateway.errors import GatewayError, InvalidEvent
from gateway.events import Channel
from gateway.notices import DecisionKind

from .base import Adapter, AdapterConfig, AdapterHost, Capabilities
from .connection import Backoff, Link
from .mail import RetryChainExhausted, offer_body, parse_message, submit_mail

log = structlog.get_logger("cti_gateway.adapters.imap_pull")

T = TypeVar("T")

#: messages fetched per round trip
FETCH_BATCH = 20


class ImapPullConfig(AdapterConfig):
    """Settings of an ``imap_pull`` vendor."""

    model_config = AdapterConfig.model_config | {"hide_input_in_errors": True}

    host: str = Field(min_length=1, max_length=255)
    #: default 143, or 993 with ``tls``
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str = Field(min_length=1)
    password: SecretStr
    mailbox: str = Field(default="INBOX", min_length=1)
    #: every message is offered to this queue
    queue: str = Field(min_length=1)
    #: implicit TLS (IMAPS); STARTTLS is not offered
    tls: bool = False
    #: check the server's certificate (``tls``); off only for a test server
    tls_verify: bool = True
    #: the keyword set with ``\\Seen`` on a message the gateway took
    keyword: str = Field(default="$CtiGateway", pattern=r"^[!#-'*+\-.0-9A-Z^-z|~$]{1,64}$")
    #: rescan without IDLE (and as a safety net with it)
    poll_interval_s: float = Field(default=30.0, ge=0.2, le=3600)
    #: IDLE is renewed this often (servers drop it after 30 min; RFC 2177 says 29)
    idle_renew_s: float = Field(default=300.0, ge=1, le=1740)
    #: a server that does not answer a command within this long is a stall: reconnect
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: use IDLE when the server has it
    idle: bool = True

    @model_validator(mode="after")
    def _default_port(self) -> ImapPullConfig:
        if self.port is None:
            object.__setattr__(self, "port", 993 if self.tls else 143)
        return self


class ImapPullAdapter(Adapter):
    """See the module documentation."""

    name: ClassVar[str] = "imap_pull"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.EMAIL})
    # a transfer between agents needs nothing from the mailbox
    capabilities: ClassVar[Capabilities] = Capabilities(can_reject=True, can_transfer=True)
    Config: ClassVar[type[AdapterConfig]] = ImapPullConfig

    config: ImapPullConfig

    def __init__(self, vendor: str, config: AdapterConfig, host: AdapterHost) -> None:
        if not isinstance(config, ImapPullConfig):
            raise TypeError(f"ImapPullAdapter needs an ImapPullConfig, not {type(config).__name__}")
        super().__init__(vendor, config, host)
        self._link = Link(
            self, self._session, backoff=Backoff(initial_s=0.5, max_s=30.0), describe=f"{config.host}:{config.port}"
        )
        self._rescan = asyncio.Event()
        self._client: IMAPClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        #: messages offered and flagged since start (a figure for tests and /readyz)
        self.taken = 0

    async def start(self) -> None:
        self._link.start()

    async def stop(self) -> None:
        await self._link.stop()

    def agents_changed(self, agent_ids: set[str]) -> None:
        # someone's capacity or presence changed: a message left unseen may fit now
        self._rescan.set()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mailbox": self.config.mailbox, "taken": self.taken}

    # -- the connection ------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one blocking IMAPClient call on the session's own thread, bounded in time.

        One thread per connection: IMAPClient is not thread-safe, so calls never overlap
        (a cancelled call finishes on that thread before the next one starts), and nothing
        blocking ever runs on the event loop's thread.
        """
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        # asyncio.timeout, not wait_for: wait_for (3.11) can swallow a cancellation
        async with asyncio.timeout(self.config.timeout_s + 5):
            return await loop.run_in_executor(self._executor, fn, *args)

    def _connect(self) -> IMAPClient:
        config = self.config
        context: ssl.SSLContext | None = None
        if config.tls:
            context = ssl.create_default_context()
            if not config.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        client = IMAPClient(
            config.host, port=config.port, ssl=config.tls, ssl_context=context, timeout=config.timeout_s
        )
        try:
            client.login(config.username, config.password.get_secret_value())
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def _close_client(self) -> None:
        """Shut the connection down on its own thread, after any call still running there
        (never on the event loop: closing a socket another thread reads can block)."""
        client, self._client = self._client, None
        executor, self._executor = self._executor, None
        if executor is not None:
            if client is not None:
                executor.submit(_shutdown, client)
            executor.shutdown(wait=False)

    async def _session(self, link: Link) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imap-{self.vendor}")
        try:
            client: IMAPClient = await self._call(self._connect)
            self._client = client
            selected = await self._call(client.select_folder, self.config.mailbox)
            uidvalidity = int(selected[b"UIDVALIDITY"])
            await self._check_uidvalidity(uidvalidity)
            can_idle = self.config.idle and b"IDLE" in await self._call(client.capabilities)
            link.up(f"{self.config.host}:{self.config.port}/{self.config.mailbox}")
            while True:
                self._rescan.clear()
                await self._scan(client, uidvalidity)
                if can_idle:
                    await self._idle(client)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._rescan.wait(), self.config.poll_interval_s)
                    await self._call(client.noop)  # a dead server is noticed here
        finally:
            self._close_client()

    async def _check_uidvalidity(self, uidvalidity: int) -> None:
        state = self.host.adapter_state(self.vendor, "mailbox") or {}
        if state.get("uidvalidity") not in (None, uidvalidity):
            log.warning(
                "imap_uidvalidity_changed",
                vendor=self.vendor,
                before=state.get("uidvalidity"),
                now=uidvalidity,
                detail="UIDs were reset: every unseen message is checked again; Message-IDs prevent double offers",
            )
        if state.get("uidvalidity") != uidvalidity:
            await self.host.save_adapter_state(self.vendor, "mailbox", {"uidvalidity": uidvalidity, "last_uid": 0})

    async def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until the server reports a change, a rescan is asked for, or renew time."""
        await self._call(client.idle)
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.config.idle_renew_s
        poll_at = loop.time() + self.config.poll_interval_s
        while not self._rescan.is_set():
            # cancelled here (stop), the client is shut down by the session: no DONE to send
            responses = await self._call(client.idle_check, 0.5)
            if any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                break
            now = loop.time()
            if now >= renew_at or now >= poll_at:
                break
        await self._call(client.idle_done)

    # -- offering ------------------------------------------------------------------------

    async def _scan(self, client: IMAPClient, uidvalidity: int) -> None:
        uids = sorted(await self._call(client.search, ["UNSEEN"]))
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start : start + FETCH_BATCH]
            fetched = await self._call(client.fetch, batch, ["BODY.PEEK[]"])
            for uid in batch:
                raw = fetched.get(uid, {}).get(b"BODY[]")
                if not isinstance(raw, bytes):
                    continue  # expunged meanwhile
                if await self._offer(uid, raw, uidvalidity):
                    await self._call(client.add_flags, [uid], [b"\\Seen", self.config.keyword.encode()])
                    self.taken += 1
                    await self._remember(uidvalidity, uid)

    async def _offer(self, uid: int, raw: bytes, uidvalidity: int) -> bool:
        """Offer one message; True when the gateway took it (flag it), False to leave it unseen."""
        with structlog.contextvars.bound_contextvars(vendor=self.vendor, uid=uid, uidvalidity=uidvalidity):
            try:
                message = parse_message(raw)
                body = offer_body(message, raw, self.config.queue, attributes={"imap_uid": uid})
                decision = await submit_mail(self.host, self.vendor, body)
            except InvalidEvent as exc:
                # a message the gateway can never take: flag it, so it is not tried forever
                log.warning("imap_message_refused", field=exc.field, error=exc.message)
                return True
            except RetryChainExhausted:
                log.error("imap_retry_chain_exhausted")
                return False
            except GatewayError as exc:
                if exc.code == "interaction_already_open":
                    return True  # taken already (a second copy of an open mail)
                if exc.code == "not_ready" or exc.retryable:
                    raise  # the gateway cannot take anything now: reconnect later
                log.warning("imap_message_refused", code=exc.code, error=str(exc))
                return True
            except Exception:
                log.exception("imap_message_unreadable")
                return True
            if decision.kind is DecisionKind.REJECTED:
                log.info("imap_left_unseen", reason=decision.reason)
                return False
            log.info("imap_taken", decision=decision.kind.value, agent_id=decision.agent_id)
            return True

    async def _remember(self, uidvalidity: int, uid: int) -> None:
        state = self.host.adapter_state(self.vendor, "mailbox") or {}
        if state.get("uidvalidity") == uidvalidity and int(state.get("last_uid", 0)) >= uid:
            return
        await self.host.save_adapter_state(self.vendor, "mailbox", {"uidvalidity": uidvalidity, "last_uid": uid})


def _shutdown(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()
