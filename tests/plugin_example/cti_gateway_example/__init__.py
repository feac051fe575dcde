"""An example third-party adapter for cti-gateway (see ticket.py)."""
