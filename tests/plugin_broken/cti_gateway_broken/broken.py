"""A plug-in whose dependency is not installed: importing it fails."""

import not_installed_dependency_xyz  # noqa: F401

from adapters.base import Adapter


class BrokenAdapter(Adapter):  # pragma: no cover - never imported successfully
    pass
