"""Faulty plug-ins for the registry's tests."""
