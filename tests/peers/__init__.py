"""Real peers the tests start and stop themselves (installed by ``.ci/run``; see the README)."""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str, package: str) -> str:
    """The path of ``binary``; without it the test fails in CI (every real-peer test runs
    there) and is skipped elsewhere with the package to install."""
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed (apt-get install {package}; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
