"""The exception tree of cti-gateway.

Every error the gateway raises on purpose is a :class:`GatewayError` with a stable
``code`` (what API clients match on), a human ``message`` and ``retryable`` (whether the
same request may succeed later without being changed).

::

    GatewayError
    ├── ConfigError                 the YAML file is wrong (carries every problem found)
    ├── InvalidEvent                an inbound event failed validation (names the field)
    ├── ActionError                 an illegal action on agents/sessions (stable code)
    │   ├── NotFound                unknown_agent, session_not_found, interaction_not_found, unknown_queue
    │   ├── Forbidden               forbidden (another agent's session)
    │   ├── InvalidState            session_not_offered, session_not_active, ...
    │   └── CapacityRejected        a manual session or transfer refused by capacity (code = reason)
    └── AdapterError                a vendor adapter failed (see adapters.base)
"""

from __future__ import annotations


class GatewayError(Exception):
    code: str = "gateway_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigError(GatewayError):
    """The configuration is invalid. ``problems`` holds every ``file:line: field: message``."""

    code = "config_error"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) or "invalid configuration")


class InvalidEvent(GatewayError):
    """An inbound vendor event is malformed. ``field`` names the field at fault."""

    code = "invalid_event"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "field": self.field}


class ActionError(GatewayError):
    """An action that is not allowed in the current state. Nothing was changed."""

    code = "invalid_action"


class NotFound(ActionError):
    code = "not_found"


class Forbidden(ActionError):
    code = "forbidden"


class InvalidState(ActionError):
    code = "invalid_state"


class CapacityRejected(ActionError):
    """Refused by the capacity rules; ``code`` is the rejection reason."""

    retryable = True

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"refused: {reason}", code=reason)
        self.reason = reason


class AdapterError(GatewayError):
    code = "adapter_error"
