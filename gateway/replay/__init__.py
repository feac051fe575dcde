"""``cti-gateway replay``: a recorded period re-run through the engine under other configs.

See :mod:`gateway.replay.run` for how customers and agents are modelled,
:mod:`gateway.replay.summary` for the figures, :mod:`gateway.replay.configs` for the
alternatives and :mod:`gateway.replay.output` for the table, JSON, CSV and plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import GatewayConfig, Known
from ..interactions import VendorCapabilities
from .configs import ReplayConfigError, Scenario, alternatives, load_recorded
from .recording import Recording, RecordingError, load_journal
from .run import Model, OnReject, Replay, RunResult
from .summary import Fidelity, Summary, fidelity, summarize

__all__ = [
    "Comparison",
    "Fidelity",
    "Model",
    "OnReject",
    "Recording",
    "RecordingError",
    "Replay",
    "ReplayConfigError",
    "RunResult",
    "Scenario",
    "Summary",
    "alternatives",
    "compare",
    "load_journal",
    "load_recorded",
    "replay",
    "vendor_capabilities_of",
]

RECORDED = "recorded"
REPLAYED = "replayed"


def vendor_capabilities_of(config: GatewayConfig) -> dict[str, VendorCapabilities]:
    """The vendors' capabilities the running gateway gives its engine (what they can take)."""
    from adapters.registry import default_registry

    from ..app import vendor_capabilities

    registry = default_registry()
    out: dict[str, VendorCapabilities] = {}
    for vendor in config.vendors:
        try:
            cls = registry.get(vendor.adapter)
        except Exception:  # an adapter not installed here: the engine assumes a capable vendor
            continue
        settings = registry.validate_vendor(vendor, known=Known.of(config))
        out[vendor.name] = vendor_capabilities(cls, settings)
    return out


def replay(name: str, recording: Recording, config: GatewayConfig, model: Model | None = None) -> RunResult:
    return Replay(name, recording, config, model=model, vendor_capabilities=vendor_capabilities_of(config)).run()


@dataclass(slots=True)
class Comparison:
    summaries: list[Summary]
    fidelity: Fidelity
    results: list[RunResult] = field(default_factory=list)


def compare(
    recording: Recording, recorded: GatewayConfig, scenarios: list[Scenario], model: Model | None = None
) -> Comparison:
    """The recorded figures, the recorded config replayed (its fidelity checked against the
    recording), then every scenario replayed under ``model``."""
    model = model or Model()
    summaries = [
        summarize(
            RECORDED,
            recorded,
            sessions=recording.sessions,
            interactions=recording.interactions,
            start=recording.start,
            end=recording.end,
        )
    ]
    # the recorded config with the recorded customers' behaviour: the modelling check
    baseline = replay(REPLAYED, recording, recorded)
    results = [baseline]
    if model != Model():  # the recorded config under the model too: what the alternatives compare to
        scenarios = [Scenario(f"{REPLAYED} ({model.describe()})", recorded), *scenarios]
    for scenario in scenarios:
        results.append(replay(scenario.name, recording, scenario.config, model))
    configs = [recorded, *(s.config for s in scenarios)]
    for result, config in zip(results, configs, strict=True):
        summary = summarize(
            result.name,
            config,
            sessions=result.sessions,
            interactions=result.interactions,
            start=result.start,
            end=result.end,
            manual_refused=result.manual_refused,
        )
        if result.errors:
            summary.notes.append(f"{len(result.errors)} replayed actions refused, first: {result.errors[0]}")
        summaries.append(summary)
    check = fidelity(recording.interactions, recording.sessions, baseline.interactions, baseline.sessions)
    return Comparison(summaries, check, results)
