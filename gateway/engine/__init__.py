"""The routing engine: inbound events in, sessions and decisions out.

Pure and synchronous: no I/O and no clock reads of its own (the :class:`~gateway.clock.Clock`
is injected). Every action (every public method but the reads) first fires the timers
that are due (offer timeouts, wrap-up ends, queue timeouts, desktop grace periods), then
acts, then leaves what the edges must deliver in :attr:`Engine.outbox` (see
:mod:`gateway.notices`). Reads change nothing; the runtime calls :meth:`Engine.tick` at
:meth:`Engine.next_deadline`, so what they show is at most a timer's latency old. Illegal actions
raise an :class:`~gateway.errors.ActionError` with a stable code and change nothing.

The engine owns session and interaction state; agent presence and capacity counters live
in a :class:`~gateway.state.base.StateStore`, reserved with compare-and-set.

:class:`Engine` is a facade; the work is split by concern, each module a set of functions of
one shared :class:`~.core.EngineState`:

* :mod:`.inbound`: vendor events (end, message, update, vendor-side accept/decline), dedup;
* :mod:`.offers`: routing, waiting lines, decisions, withdrawals of offers;
* :mod:`.parallel`: parallel offers (``policy: offer_all``), the first accept wins;
* :mod:`.sessions`: accept, decline, end, wrap-up, manual sessions, notes, accounts, replies;
* :mod:`.transfers`: blind and consult transfers;
* :mod:`.focus`: focus and focus time;
* :mod:`.agents`: presence, desktops, live reconfiguration, retiring agents;
* :mod:`.timers`: arming, firing and pruning;
* :mod:`.restore`: the journal's changes and the rebuild from a snapshot;
* :mod:`.dump`: the whole state as JSON and back (the shared log's snapshots);
* :mod:`.slots`: capacity reservations and the eligibility index.
"""

from .core import Missing, Recalled
from .dump import FORMAT as STATE_FORMAT
from .dump import DumpRefused
from .facade import FOCUS_CHECKPOINT_S, Engine
from .inbound import MAX_TRANSCRIPT
from .sessions import MAX_NOTE_CHARS, MAX_NOTES_PER_SESSION

__all__ = [
    "STATE_FORMAT",
    "DumpRefused",
    "FOCUS_CHECKPOINT_S",
    "MAX_NOTE_CHARS",
    "MAX_NOTES_PER_SESSION",
    "MAX_TRANSCRIPT",
    "Engine",
    "Missing",
    "Recalled",
]
