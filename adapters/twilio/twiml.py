"""TwiML documents the gateway answers Twilio's voice requests with (pure, XML-escaped)."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

__all__ = ["CONTENT_TYPE", "dial", "empty", "hangup", "hold", "reject"]

CONTENT_TYPE = "text/xml"
_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'

#: Events of the agent's leg Twilio reports to the noun's ``statusCallback``.
AGENT_LEG_EVENTS = "initiated ringing answered completed"


def _response(inner: str) -> str:
    return f"{_HEAD}<Response>{inner}</Response>"


def dial(target: str, *, action: str, status_callback: str, timeout_s: int, caller_id: str | None = None) -> str:
    """Ring the agent's ``target`` (``client:NAME`` -> ``<Client>``, ``sip:...`` -> ``<Sip>``).

    ``answerOnBridge``: the caller hears ringing until the agent answers. ``action`` is
    requested when the agent's leg ends (answered and hung up, or not answered), with
    ``DialCallStatus``; ``status_callback`` gets the agent leg's progress.
    """
    attributes = f' action={quoteattr(action)} method="POST" timeout="{int(timeout_s)}" answerOnBridge="true"' + (
        f" callerId={quoteattr(caller_id)}" if caller_id else ""
    )
    callback = (
        f" statusCallbackEvent={quoteattr(AGENT_LEG_EVENTS)} statusCallback={quoteattr(status_callback)}"
        ' statusCallbackMethod="POST"'
    )
    if target.startswith("client:"):
        noun = f"<Client{callback}>{escape(target.removeprefix('client:'))}</Client>"
    else:
        noun = f"<Sip{callback}>{escape(target)}</Sip>"
    return _response(f"<Dial{attributes}>{noun}</Dial>")


def reject(reason: str = "busy") -> str:
    """Refuse the call before it is answered (the caller hears busy, nothing is billed)."""
    return _response(f"<Reject reason={quoteattr(reason)}/>")


def hold(redirect: str, *, pause_s: int, music_url: str | None = None) -> str:
    """Keep a waiting caller on the line, then ask the gateway again (``<Redirect>``)."""
    wait = f"<Play>{escape(music_url)}</Play>" if music_url else f'<Pause length="{int(pause_s)}"/>'
    return _response(f'{wait}<Redirect method="POST">{escape(redirect)}</Redirect>')


def hangup() -> str:
    return _response("<Hangup/>")


def empty() -> str:
    return _response("")
