"""Test-suite wide settings.

Hypothesis profiles: ``dev`` (the default: quick, for the edit-test loop) and ``ci`` (many
more examples, no deadline, a fresh random seed per run, failures printed with a
``@reproduce_failure`` blob). CI sets ``CI=true``, which selects ``ci``;
``HYPOTHESIS_PROFILE=<name>`` selects a profile explicitly and wins over ``CI``.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=200)
settings.register_profile("ci", max_examples=2000, deadline=None, derandomize=False, print_blob=True)


def _profile() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    return "ci" if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes") else "dev"


settings.load_profile(_profile())
