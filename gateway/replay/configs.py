"""The configurations a replay compares: the recorded one and its alternatives.

An alternative is the recorded configuration with changes on top, given as an override
YAML file (``--override FILE``: a partial configuration, merged into the recorded one) or
as ``--set PATH=VALUE`` assignments. Each is validated like ``check-config`` validates a
file: every problem is reported (``NAME: field.path: message``), nothing is run.

Merging: mappings merge key by key (recursively); the list sections whose entries have a
name (``queues`` and ``vendors`` by ``name``, ``agents`` by ``id``) merge entry by entry, an
entry of a new name is appended; any other list is replaced as a whole. A ``--set`` path is
dotted; inside a named list a segment is an entry's name (``agents.a1001.profile``) or its
index. The value is read as YAML (``8``, ``true``, ``{voice: 2}``).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import GatewayConfig
from ..config_loader import VendorCheck, load_config, load_config_text
from ..errors import ConfigError

#: list sections merged entry by entry, and the key naming an entry
NAMED_LISTS = {"queues": "name", "agents": "id", "vendors": "name"}

#: a replay needs no secret: a ``${NAME}`` that is not set reads as this
PLACEHOLDER = "replay-placeholder-not-a-secret-0123456789"

_PROBLEM = re.compile(r"^[^\n]*?:\d+: ")


class ReplayConfigError(Exception):
    """Alternatives that are not valid; ``problems`` lists every one, ready to print."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _LenientEnviron(Mapping[str, str]):
    """The process environment, where a missing variable reads as :data:`PLACEHOLDER`."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, PLACEHOLDER)

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


LENIENT_ENVIRON = _LenientEnviron()


@dataclass(slots=True)
class Scenario:
    """One configuration to replay under: its name, what it changes, the validated config."""

    name: str
    config: GatewayConfig
    changes: list[str] = field(default_factory=list)


def load_recorded(path: str, *, vendor_check: VendorCheck | None = None) -> tuple[GatewayConfig, dict[str, Any]]:
    """The recorded configuration (validated like ``check-config``) and its raw data."""
    config = load_config(path, environ=LENIENT_ENVIRON, vendor_check=vendor_check)
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8-sig"))
    assert isinstance(raw, dict)  # load_config accepted it: a mapping
    return config, raw


def merge(base: Any, override: Any) -> Any:
    """``override`` merged into a copy of ``base`` (see the module doc)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            if key in out and key in NAMED_LISTS and isinstance(out[key], list) and isinstance(value, list):
                out[key] = _merge_named(out[key], value, NAMED_LISTS[key])
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _merge_named(base: list[Any], override: list[Any], key: str) -> list[Any]:
    out = copy.deepcopy(base)
    for entry in override:
        name = entry.get(key) if isinstance(entry, dict) else None
        index = next(
            (i for i, e in enumerate(out) if isinstance(e, dict) and name is not None and e.get(key) == name), None
        )
        if index is None:
            out.append(copy.deepcopy(entry))
        else:
            out[index] = merge(out[index], entry)
    return out


def apply_set(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``PATH=VALUE`` to ``data`` in place; ValueError says what is wrong."""
    path, sep, text = assignment.partition("=")
    segments = path.strip().split(".")
    if not sep or not all(segments):
        raise ValueError("write PATH=VALUE, e.g. capacity_profiles.blended.max_sessions=8")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"the value is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    node: Any = data
    for depth, segment in enumerate(segments):
        last = depth == len(segments) - 1
        where = ".".join(segments[:depth]) or "the top level"
        if isinstance(node, dict):
            if last:
                node[segment] = value
            else:
                node = node.setdefault(segment, {})
        elif isinstance(node, list):
            index = _list_index(node, segment, NAMED_LISTS.get(segments[depth - 1], "name") if depth else "name")
            if index is None:
                raise ValueError(f"{where} has no entry {segment!r}")
            if last:
                node[index] = value
            else:
                node = node[index]
        else:
            raise ValueError(f"{where} is a value, not a section: it has no {segment!r}")


def _list_index(items: list[Any], segment: str, key: str) -> int | None:
    for i, entry in enumerate(items):
        if isinstance(entry, dict) and str(entry.get(key)) == segment:
            return i
    if segment.isdigit() and int(segment) < len(items):
        return int(segment)
    return None


def _validate(name: str, data: dict[str, Any], vendor_check: VendorCheck | None) -> GatewayConfig:
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        return load_config_text(text, name, environ=LENIENT_ENVIRON, vendor_check=vendor_check)
    except ConfigError as exc:
        # the line numbers are those of the merged document, which nobody wrote: leave them out
        raise ReplayConfigError([f"{name}: {_PROBLEM.sub('', p)}" for p in exc.problems]) from None


def alternatives(
    raw: dict[str, Any],
    *,
    overrides: list[str],
    assignments: list[str],
    vendor_check: VendorCheck | None = None,
) -> list[Scenario]:
    """One scenario per override file, plus one for all ``assignments`` together.

    Raises :class:`ReplayConfigError` with every problem of every alternative."""
    problems: list[str] = []
    scenarios: list[Scenario] = []
    for path in overrides:
        name = Path(path).stem
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
            override = yaml.safe_load(text)
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problems.append(f"{path}{line}: yaml: {getattr(exc, 'problem', None) or exc}")
            continue
        if not isinstance(override, dict):
            problems.append(f"{path}:1: an override file is a mapping of sections, like the configuration")
            continue
        try:
            config = _validate(path, merge(raw, override), vendor_check)
        except ReplayConfigError as exc:
            problems.extend(exc.problems)
            continue
        scenarios.append(Scenario(name, config, [f"override {path}"]))
    if assignments:
        data = copy.deepcopy(raw)
        bad = False
        for assignment in assignments:
            try:
                apply_set(data, assignment)
            except ValueError as exc:
                problems.append(f"--set {assignment}: {exc}")
                bad = True
        if not bad:
            name = _short(assignments[0]) + (f" +{len(assignments) - 1}" if len(assignments) > 1 else "")
            try:
                config = _validate("--set " + " --set ".join(assignments), data, vendor_check)
            except ReplayConfigError as exc:
                problems.extend(exc.problems)
            else:
                scenarios.append(Scenario(name, config, [f"set {a}" for a in assignments]))
    if problems:
        raise ReplayConfigError(problems)
    return scenarios


def _short(assignment: str) -> str:
    """``capacity_profiles.blended.max_sessions=8`` -> ``blended.max_sessions=8``."""
    path, _, value = assignment.partition("=")
    parts = path.split(".")
    return ".".join(parts[-2:]) + "=" + value
