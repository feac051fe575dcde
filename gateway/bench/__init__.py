"""``cti-gateway bench``: the gateway's performance figures (P1-P6), measured on this machine.

Every party is a separate process: the gateway (:mod:`gateway.cli` ``run``), a bare aiohttp
server (:mod:`.baseline`), the load generator (:mod:`.loadgen`), the agent desktops
(:mod:`.desktops`) and the routing micro-benchmark (:mod:`.routing`), and for the cluster figure Redis, PostgreSQL and
several gateway instances (:mod:`.cluster`); :mod:`.runner` starts
them on loopback, collects their results and prints the table.
"""

from .runner import FIGURES, SELECTABLE, Bench, BenchError, BenchOptions

__all__ = ["FIGURES", "SELECTABLE", "Bench", "BenchError", "BenchOptions"]
