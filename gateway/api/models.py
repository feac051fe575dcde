"""Request bodies of the REST API and client messages of the agent WebSocket.

Every body is a JSON object validated by one of these pydantic models; unknown keys are
errors (400 ``invalid_request`` naming the field), like everywhere in the gateway. The
WebSocket messages carry the same fields as the REST bodies ("the same bodies go to the
REST session actions", DESIGN section 6), plus ``type`` and an optional ``ref``; there a
message about one session must name it in ``session_id``, while in REST the session is in
the path, so a REST body has no ``session_id`` (one place to name the session, none to
disagree).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway import fastjson
from gateway.engine import MAX_NOTE_CHARS

__all__ = [
    "MAX_ID_CHARS",
    "BodyProblem",
    "ConfirmAccountBody",
    "FocusBody",
    "NewSessionBody",
    "NoteBody",
    "PresenceBody",
    "SendBody",
    "SessionBody",
    "TransferBody",
    "WS_MESSAGES",
    "is_valid_unicode",
    "parse_json",
    "validate",
]

MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_REASON_CHARS = 256
#: a chat reply; small enough that any reply fits the 64 KiB body limit as JSON
MAX_SEND_CHARS = 16_384
#: a note or reply must contain something besides white space
NOT_BLANK = r"\S"


class BodyProblem(ValueError):
    """A body that is not what the API takes: ``field`` names the culprit (``body`` for the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Id = Field(min_length=1, max_length=MAX_ID_CHARS)


# --------------------------------------------------------------------------- field groups


class PresenceBody(_Body):
    """``PUT /v1/agents/{id}/presence``; WebSocket ``presence``."""

    state: Literal["ready", "not_ready", "offline"]
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


class NewSessionBody(_Body):
    """``POST /v1/agents/{id}/sessions``; WebSocket ``new_session``."""

    label: str | None = Field(default=None, max_length=MAX_LABEL_CHARS)


class FocusBody(_Body):
    """``PUT /v1/agents/{id}/focus``; WebSocket ``focus``: a session of the agent, or null for none."""

    session_id: str | None = Field(min_length=1, max_length=MAX_ID_CHARS)


class SessionBody(_Body):
    """``accept``, ``decline``, ``end``, ``focus``, ``reset_account``: no fields (an empty body)."""


class TransferBody(_Body):
    """Exactly one of to_agent and to_queue."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["to_agent"],
                    "properties": {"to_agent": {"type": "string"}, "to_queue": {"type": "null"}},
                },
                {
                    "required": ["to_queue"],
                    "properties": {"to_queue": {"type": "string"}, "to_agent": {"type": "null"}},
                },
            ]
        }
    )

    to_agent: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    to_queue: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    mode: Literal["blind", "consult"] = "blind"


class NoteBody(_Body):
    text: str = Field(min_length=1, max_length=MAX_NOTE_CHARS, pattern=NOT_BLANK)


class SendBody(_Body):
    text: str = Field(min_length=1, max_length=MAX_SEND_CHARS, pattern=NOT_BLANK)


class ConfirmAccountBody(_Body):
    account_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)


# --------------------------------------------------------------------------- WebSocket messages


class _WsSession(_Body):
    session_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)


class WsSession(_WsSession):
    pass


# the same bodies as the REST session actions, plus the session_id the URL carries there


class WsTransfer(_WsSession, TransferBody):
    pass


class WsNote(_WsSession, NoteBody):
    pass


class WsSend(_WsSession, SendBody):
    pass


class WsConfirmAccount(_WsSession, ConfirmAccountBody):
    pass


class WsPing(_Body):
    pass


#: client message type -> the model of its fields (besides ``type`` and ``ref``)
WS_MESSAGES: dict[str, type[_Body]] = {
    "presence": PresenceBody,
    "accept": WsSession,
    "decline": WsSession,
    "end": WsSession,
    "focus": FocusBody,
    "new_session": NewSessionBody,
    "transfer": WsTransfer,
    "note": WsNote,
    "confirm_account": WsConfirmAccount,
    "reset_account": WsSession,
    "send": WsSend,
    "ping": WsPing,
}


# --------------------------------------------------------------------------- parsing


def parse_json(raw: bytes | str) -> Any:
    """Parse JSON text; :class:`BodyProblem` (field ``body``) if it is not JSON, or if it
    is not valid Unicode: a lone surrogate escape (``"\\ud800"``) parses into a string no
    UTF-8 encoder (journal, socket, log) can write, so it is refused here, at the door."""
    try:
        data = fastjson.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BodyProblem("body", "not valid JSON") from None
    if not is_valid_unicode(data):
        raise BodyProblem("body", "not valid Unicode: lone surrogate escapes (such as \\ud800) are not text")
    return data


def is_valid_unicode(data: Any) -> bool:
    """Whether every string in parsed JSON (keys included) can be encoded as UTF-8
    (iterative: any nesting depth the parser accepted is fine here)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def validate(model: type[_Body], data: Any) -> Any:
    """``data`` (parsed JSON) as ``model``; :class:`BodyProblem` naming the first bad field."""
    if not isinstance(data, dict):
        raise BodyProblem("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in err.get("loc", ())) or "body"
        kind = err.get("type")
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required"
        elif kind == "string_pattern_mismatch":
            message = "must not be blank"
        else:
            message = str(err.get("msg", "invalid"))
        raise BodyProblem(field, message) from None
