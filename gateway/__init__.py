"""cti-gateway: route inbound calls, chats and e-mails to multi-session agents."""

__version__ = "0.1.0"
