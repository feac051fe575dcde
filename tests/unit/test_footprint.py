"""What a gateway process loads and keeps: libraries it does not use stay unloaded (P4)."""

from __future__ import annotations

import subprocess
import sys


def test_the_gateway_does_not_load_asyncpg_unless_records_use_postgresql() -> None:
    """asyncpg costs ~10 MB of resident memory; only ``records: {url: postgresql://...}``
    needs it (and then loads it)."""
    code = (
        "import sys\n"
        "import gateway.app, gateway.cli, gateway.records\n"
        "from adapters.registry import default_registry\n"
        "default_registry()\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg loaded at start'\n"
        "from gateway.records import PostgresJournal\n"
        "assert 'asyncpg' in sys.modules and PostgresJournal.__name__ == 'PostgresJournal'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
