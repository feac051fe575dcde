"""Vendor adapters: each speaks one vendor protocol and emits normalized events."""
