"""The gateway's HTTP and WebSocket interfaces (DESIGN section 6)."""
