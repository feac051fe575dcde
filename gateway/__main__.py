"""``python -m gateway``: the same as the ``cti-gateway`` command."""

from .cli import main

raise SystemExit(main())
