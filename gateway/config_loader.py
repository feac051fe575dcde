"""Read the deployment's YAML file into a :class:`~gateway.config.GatewayConfig`.

The models in :mod:`gateway.config` validate shape and cross-references; this module adds
what only the file knows about:

* ``${NAME}`` interpolation of environment variables inside string values, as the whole
  value or embedded in it. ``$${`` stands for a literal ``${``. A variable that is not set
  is an error. Interpolated values are never echoed in error messages.
* Duplicate mapping keys are errors (plain YAML silently keeps the last one).
* Values are plain: strings, numbers, booleans, null, lists and mappings. A date-like value
  (``2024-13-45``) stays a string (no timestamps are constructed; ``!!timestamp x`` is the
  string ``x``); a value its tag cannot read (``!!int x``, ``!!bool x``, ``0x_``) and other
  tags (``!!binary``, ``!!set``, ``!custom``) are errors at their line; nesting deeper than
  :data:`MAX_DEPTH` levels is refused.
* Every problem is reported as ``file:line: field.path: message`` where ``line`` is the
  1-based line of the YAML node at fault. All problems of the file are collected, sorted by
  line, and raised together as one :class:`~gateway.errors.ConfigError`.

The file is composed into a node tree first (the nodes keep their line numbers), checked
and interpolated node by node, then constructed and validated; validation errors are
mapped back onto the nodes through their pydantic ``loc``.

The adapter-specific settings of vendors are not known here: a caller that knows the
adapters passes ``vendor_check`` (e.g. ``adapters.registry.default_registry().vendor_problems``),
called with each vendor entry that is valid on its own and its index, returning
``(loc, message)`` pairs that are reported at the line of ``loc``'s key.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .config import (
    CapacityProfile,
    GatewayConfig,
    Known,
    VendorConfig,
    capacity_profile_problems,
    reference_problems,
)
from .errors import ConfigError

__all__ = ["MAX_DEPTH", "VendorCheck", "load_config", "load_config_apart", "load_config_text"]

Loc = tuple[str | int, ...]
#: Checks one vendor's adapter settings: ``(vendor, index) -> [(loc from the root, message)]``.
VendorCheck = Callable[[VendorConfig, int, Known], Iterable[tuple[Loc, str]]]

#: Mappings and sequences nested deeper than this are refused (no sane configuration comes near).
MAX_DEPTH = 64

_YAML_TAG = "tag:yaml.org,2002:"
_STR_TAG = _YAML_TAG + "str"
_NULL_TAG = _YAML_TAG + "null"
_MAP_TAG = _YAML_TAG + "map"
_SEQ_TAG = _YAML_TAG + "seq"
_MERGE_TAG = _YAML_TAG + "merge"
_TIMESTAMP_TAG = _YAML_TAG + "timestamp"
#: What the value of a scalar tag must be, for the message when it cannot be read.
_SCALAR_KINDS = {
    _YAML_TAG + "int": "an integer",
    _YAML_TAG + "float": "a number",
    _YAML_TAG + "bool": "true or false",
    _NULL_TAG: "null",
    _STR_TAG: "a string",
    _TIMESTAMP_TAG: "a string",
}
#: ``$${`` (escape), ``${NAME}`` (reference) or a malformed ``${``, in that order.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
_MALFORMED = "malformed ${...}: write ${NAME} (letters, digits, _) or $${ for a literal ${"
#: A model-level validator message about one field of the model: ``"units.voice: ..."``.
_FIELD_MESSAGE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*): (.+)", re.DOTALL)
#: pydantic's marker for an error in a dict key rather than its value.
_KEY_MARKER = "[key]"


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    vendor_check: VendorCheck | None = None,
) -> GatewayConfig:
    """Read, interpolate and validate the YAML file at ``path``.

    ``environ`` is where ``${NAME}`` is looked up (default: :data:`os.environ`);
    ``vendor_check`` validates vendors' adapter settings (default: not checked).
    Raises :class:`ConfigError` with every problem found, ``PATH: cannot read: ...`` included.
    """
    filename = os.fspath(path)
    try:
        data = Path(filename).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{filename}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{filename}:{line}: yaml: not valid UTF-8 text"]) from exc
    return load_config_text(text, filename, environ=environ, vendor_check=vendor_check)


#: Files at least this large are read in a child process by :func:`load_config_apart`.
APART_MIN_BYTES = 256 * 1024


def load_config_apart(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    vendor_check: VendorCheck | None = None,
    min_bytes: int = APART_MIN_BYTES,
) -> GatewayConfig:
    """:func:`load_config`, for a long-running process: a large file is read and checked in
    a forked child, which hands the validated configuration back as JSON.

    Checking a file keeps its whole YAML node tree (with line numbers) in memory: several
    KB per configured agent, freed afterwards but never given back to the operating system
    (the allocator's arenas stay fragmented by the objects kept). A gateway with 10,000
    agents would carry ~80 MB of it for its whole life. Here the parent only parses the
    child's JSON (pydantic's own parser, no Python tree). Same result, same errors: the
    child runs :func:`load_config` itself, and its configuration is used only if it
    survives the round trip unchanged; otherwise (or without ``fork``, or if the child
    fails) the file is read here as usual.
    """
    filename = os.fspath(path)
    try:
        size = os.stat(filename).st_size
    except OSError:
        size = 0
    if size < min_bytes or not hasattr(os, "fork"):
        return load_config(filename, environ=environ, vendor_check=vendor_check)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow the fork)
        code = 0
        try:
            os.close(read_end)
            try:
                config = load_config(filename, environ=environ, vendor_check=vendor_check)
                dumped = config.model_dump_json()
                if GatewayConfig.model_validate_json(dumped) != config:
                    answer: dict[str, object] = {"fallback": "not exact through JSON"}
                else:
                    answer = {"config": dumped}
            except ConfigError as exc:
                answer = {"problems": exc.problems}
            with os.fdopen(write_end, "w", encoding="utf-8") as out:
                json.dump(answer, out)
        except BaseException:  # noqa: BLE001 - whatever happened, the parent reads the file itself
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "r", encoding="utf-8") as answer_in:
        raw = answer_in.read()
    _, status = os.waitpid(pid, 0)
    got: dict[str, Any] = {}
    try:
        if os.waitstatus_to_exitcode(status) == 0:
            got = dict(json.loads(raw))
    except (ValueError, TypeError):
        got = {}
    problems, text = got.get("problems"), got.get("config")
    if isinstance(problems, list):
        raise ConfigError([str(problem) for problem in problems])
    if isinstance(text, str):
        try:
            return GatewayConfig.model_validate_json(text)
        except ValidationError:  # pragma: no cover - the child checked the round trip
            pass
    return load_config(filename, environ=environ, vendor_check=vendor_check)


def load_config_text(
    text: str,
    filename: str,
    *,
    environ: Mapping[str, str] | None = None,
    vendor_check: VendorCheck | None = None,
) -> GatewayConfig:
    """Parse and validate YAML ``text``; ``filename`` is only used in error messages.

    ``environ`` is where ``${NAME}`` is looked up (default: :data:`os.environ`);
    ``vendor_check`` validates vendors' adapter settings (default: not checked).
    Raises :class:`ConfigError` with every problem found, sorted by line.
    """
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise _yaml_config_error(exc, text, filename) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError([f"{filename}:1: yaml: the file is empty (capacity_profiles is required)"])
        if not isinstance(root, yaml.MappingNode):
            message = f"the top level must be a mapping of sections, not {_kind(root)}"
            raise ConfigError([f"{filename}:{_line(root)}: yaml: {message}"])
        document = _Document(root, os.environ if environ is None else environ, loader)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise _yaml_config_error(exc, text, filename) from exc
    finally:
        loader.dispose()

    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        checked_profiles: set[str | int] = set()
        for error in exc.errors(include_url=False, include_input=False):
            document.add_validation_error(error)
            loc = tuple(error["loc"])
            if error["type"] == "value_error" and len(loc) == 2 and loc[0] == "capacity_profiles":
                checked_profiles.add(loc[1])  # the model validator ran: its problems are in
        document.check_profiles(data, skip=checked_profiles)
    # on the file as written: unknown references are reported together with shape errors
    for loc, message in reference_problems(data):
        document.add(loc, message)
    if vendor_check is not None:
        document.check_vendors(data, vendor_check)
    if config is not None and not document.problems:
        return config
    raise ConfigError([problem.render(filename) for problem in sorted(document.problems)])


def _names(data: dict[str, object], section: str, key: str) -> frozenset[str]:
    items = data.get(section)
    if not isinstance(items, list):
        return frozenset()
    return frozenset(str(item[key]) for item in items if isinstance(item, dict) and key in item)


@dataclass(frozen=True, order=True)
class _Problem:
    line: int
    path: str
    message: str

    def render(self, filename: str) -> str:
        return f"{filename}:{self.line}: {self.path}: {self.message}"


@dataclass(frozen=True)
class _Place:
    """Where a ``loc`` lands in the node tree: the deepest node that exists on its path."""

    node: yaml.Node
    #: The key node when ``node`` is the value of a mapping entry.
    key: yaml.Node | None
    #: Whether the whole ``loc`` exists (else ``node`` is its deepest existing ancestor).
    complete: bool

    def line(self, *, at_key: bool = False) -> int:
        """The key's line for keys and for collections under a key, else the node's line."""
        if self.key is not None and (at_key or not isinstance(self.node, yaml.ScalarNode)):
            return _line(self.key)
        return _line(self.node)


class _Document:
    """The composed node tree plus the problems found in it.

    Creating it checks every mapping for duplicate keys and interpolates ``${NAME}`` in
    string values, in place, so the tree is ready to be constructed.
    """

    def __init__(self, root: yaml.MappingNode, environ: Mapping[str, str], loader: _Loader) -> None:
        self.root = root
        self.problems: list[_Problem] = []
        self._environ = environ
        self._loader = loader
        #: Interpolated nodes (by id) and the values put into them, by variable name.
        self._secrets: dict[int, dict[str, str]] = {}
        #: Nodes whose interpolation or construction failed: their validation errors would
        #: only repeat it.
        self._failed: set[int] = set()
        self._prepare(root)

    # -- reporting ---------------------------------------------------------------------

    def add(self, loc: Loc, message: str, *, at_key: bool = False) -> None:
        """Record ``message`` about the node at ``loc``."""
        place = self.locate(loc)
        message = self._redact(place.node, message)
        self.problems.append(_Problem(place.line(at_key=at_key), _dotted(loc), message))

    def add_validation_error(self, error: ErrorDetails) -> None:
        """Record one pydantic error, with a short human message."""
        loc: Loc = tuple(error["loc"])
        kind = error["type"]
        if loc and loc[-1] == _KEY_MARKER:
            self.add(loc[:-1], f"invalid key: {_human(error['msg'])}", at_key=True)
        elif kind == "extra_forbidden":
            self.add(loc, "unknown key", at_key=True)
        elif kind == "missing":
            self.add(loc, "required")
        elif self._repeats_interpolation_problem(loc):
            return
        elif kind == "value_error":
            for field_loc, message in self._split_model_message(loc, _human(error["msg"])):
                self.add(field_loc, message)
        else:
            self.add(loc, _human(error["msg"]))

    def check_profiles(self, data: object, *, skip: set[str | int]) -> None:
        """Record the capacity profile rules of profiles whose model validator did not run
        (the profile has other problems) except those in ``skip``, on their valid fields."""
        profiles = data.get("capacity_profiles") if isinstance(data, dict) else None
        if not isinstance(profiles, dict):
            return
        for name, raw in profiles.items():
            if name in skip or not isinstance(name, str) or not isinstance(raw, dict):
                continue
            fields, invalid = CapacityProfile.valid_fields(raw)
            problems = capacity_profile_problems(fields, invalid=invalid)
            if problems:
                for field_loc, message in self._split_model_message(("capacity_profiles", name), "; ".join(problems)):
                    self.add(field_loc, message)

    def check_vendors(self, data: object, check: VendorCheck) -> None:
        """Record ``check``'s problems of every vendor entry that is valid on its own."""
        if not isinstance(data, dict):
            return
        vendors = data.get("vendors")
        if not isinstance(vendors, list):
            return
        known = Known(agents=_names(data, "agents", "id"), queues=_names(data, "queues", "name"))
        for index, item in enumerate(vendors):
            try:
                vendor = VendorConfig.model_validate(item)
            except ValidationError:
                continue  # reported by the validation of the whole file
            for loc, message in check(vendor, index, known):
                if not self._repeats_interpolation_problem(loc):
                    self.add(loc, message, at_key=True)

    def _repeats_interpolation_problem(self, loc: Loc) -> bool:
        place = self.locate(loc)
        return place.complete and id(place.node) in self._failed

    def locate(self, loc: Loc) -> _Place:
        node: yaml.Node = self.root
        key: yaml.Node | None = None
        for segment in loc:
            entry = _child(node, segment)
            if entry is None:
                return _Place(node, key, complete=False)
            key, node = entry
        return _Place(node, key, complete=True)

    def _split_model_message(self, loc: Loc, message: str) -> Iterator[tuple[Loc, str]]:
        """Point a model validator's ``"a.b: msg; c: msg"`` parts at fields ``a.b`` and ``c``.

        Only for a message about a whole mapping (a model-level validator) and only when
        the first part of the named path is a key of that mapping.
        """
        place = self.locate(loc)
        if not (place.complete and isinstance(place.node, yaml.MappingNode)):
            yield loc, message
            return
        for part in message.split("; "):
            match = _FIELD_MESSAGE.fullmatch(part)
            if match and _child(place.node, match.group(1).split(".")[0]) is not None:
                yield loc + tuple(match.group(1).split(".")), match.group(2)
            else:
                yield loc, part

    def _redact(self, node: yaml.Node, message: str) -> str:
        """Replace interpolated values in a message about ``node`` by their ``${NAME}``."""
        values = self._secrets.get(id(node), {})
        for name, value in sorted(values.items(), key=lambda item: -len(item[1])):
            if value:
                message = message.replace(value, f"${{{name}}}")
        return message

    # -- duplicate keys and interpolation ------------------------------------------------

    def _prepare(self, root: yaml.Node) -> None:
        seen: set[int] = set()  # aliases share nodes (and may form cycles): visit each once
        pending: list[tuple[yaml.Node, Loc]] = [(root, ())]
        while pending:
            node, loc = pending.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                pending.extend(reversed(self._mapping_children(node, loc)))
            elif isinstance(node, yaml.SequenceNode):
                pending.extend(reversed([(item, loc + (i,)) for i, item in enumerate(node.value)]))
            elif isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG and "${" in node.value:
                self._interpolate(node, loc)
            self._check_tag(node, loc)

    def _check_tag(self, node: yaml.Node, loc: Loc, *, key: bool = False) -> None:
        """Report a node its tag cannot construct; it becomes null (a key: the text as
        written; a collection: a plain one)."""
        problem: str | None = None
        if isinstance(node, yaml.ScalarNode):
            kind = _SCALAR_KINDS.get(node.tag)
            if kind is None:
                problem = f"unsupported YAML tag {_short_tag(node.tag)} (write a plain value)"
            else:
                try:
                    self._loader.yaml_constructors[node.tag](self._loader, node)
                except Exception:  # noqa: BLE001 - each constructor fails in its own way
                    problem = f"not valid as {_short_tag(node.tag)}: must be {kind} (quote it if it is text)"
            if problem is not None:
                node.tag, node.value = (_STR_TAG, node.value) if key else (_NULL_TAG, "")
        elif isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            plain = _MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG
            if node.tag != plain:
                problem = f"unsupported YAML tag {_short_tag(node.tag)} (write a plain mapping or list)"
                node.tag = plain
        if problem is not None:
            self._failed.add(id(node))
            self.problems.append(_Problem(_line(node), _dotted(loc), problem))

    def _mapping_children(self, node: yaml.MappingNode, loc: Loc) -> list[tuple[yaml.Node, Loc]]:
        """The entries' values to visit; reports keys given twice in this mapping."""
        children: list[tuple[yaml.Node, Loc]] = []
        first_lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            # ``<<: *anchor`` brings the anchor's keys into this mapping; a complex key (a
            # mapping or sequence as key) is refused when the document is constructed.
            if key.tag == _MERGE_TAG or not isinstance(key, yaml.ScalarNode):
                children.append((value, loc))
                continue
            self._check_tag(key, loc + (key.value,), key=True)
            identity = (key.tag, key.value)
            if identity in first_lines:
                self.problems.append(
                    _Problem(
                        _line(key),
                        _dotted(loc + (key.value,)),
                        f"duplicate key (first given on line {first_lines[identity]})",
                    )
                )
            else:
                first_lines[identity] = _line(key)
            children.append((value, loc + (key.value,)))
        return children

    def _interpolate(self, node: yaml.ScalarNode, loc: Loc) -> None:
        problems: list[str] = []
        used: dict[str, str] = {}

        def substitute(match: re.Match[str]) -> str:
            token, name = match.group(0), match.group(1)
            if token == "$${":
                return "${"
            if name is None:
                problems.append(_MALFORMED)
                return token
            value = self._environ.get(name)
            if value is None:
                problems.append(f"environment variable {name} is not set")
                return token
            used[name] = value
            return value

        result = _REFERENCE.sub(substitute, node.value)
        if problems:
            self._failed.add(id(node))
            self.problems.extend(_Problem(_line(node), _dotted(loc), message) for message in problems)
            return
        node.value = result
        if used:
            self._secrets[id(node)] = used


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader for configuration files: plain values only, nesting bounded.

    Date-like values are not resolved as timestamps (they stay strings, so ``2024-13-45``
    cannot fail); ``!!timestamp`` constructs the string as written; the tags a
    configuration has no use for (``!!binary``, ``!!set``, ``!!omap``, ``!!pairs``) have no
    constructor, so the loader reports them as unsupported.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    yaml_constructors = {
        tag: constructor
        for tag, constructor in yaml.SafeLoader.yaml_constructors.items()
        if tag is None or tag in _SCALAR_KINDS or tag in (_MAP_TAG, _SEQ_TAG)
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def construct_yaml_timestamp_as_text(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.add_constructor(_TIMESTAMP_TAG, _Loader.construct_yaml_timestamp_as_text)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


def _child(node: yaml.Node, segment: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    """``(key node, value node)`` of ``segment`` in a mapping or sequence node, if present."""
    if isinstance(node, yaml.MappingNode):
        for key, value in reversed(node.value):  # the last entry wins, as when constructing
            if isinstance(key, yaml.ScalarNode) and key.value == str(segment):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(segment, int) and 0 <= segment < len(node.value):
        return None, node.value[segment]
    return None


def _line(node: yaml.Node) -> int:
    return _mark_line(node.start_mark)


def _mark_line(mark: yaml.Mark) -> int:
    """The 1-based line of ``mark`` as editors (and ``wc -l``) count lines: by ``\n``.

    YAML also breaks lines at ``\r``, NEL (U+0085) and U+2028/U+2029, so its own line
    number can lie past the file's last line (a lone ``\r``, an LS inside a value)."""
    buffer = getattr(mark, "buffer", None)
    pointer = getattr(mark, "pointer", None)
    if isinstance(buffer, str) and isinstance(pointer, int):
        return bisect.bisect_left(_newlines(buffer), pointer) + 1
    return int(mark.line) + 1


@lru_cache(maxsize=1)
def _newlines(buffer: str) -> list[int]:
    """The positions of the ``\n`` characters of the text being read (one text at a time)."""
    return [match.start() for match in re.finditer("\n", buffer)]


def _kind(node: yaml.Node) -> str:
    return "a sequence" if isinstance(node, yaml.SequenceNode) else "a single value"


def _dotted(loc: Loc) -> str:
    return ".".join(str(segment) for segment in loc) or "config"


def _human(message: str) -> str:
    """pydantic's message without its ``Value error, `` prefix, starting in lower case."""
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message[:2].istitle():
        message = message[0].lower() + message[1:]
    return message


def _yaml_config_error(exc: yaml.YAMLError, text: str, filename: str) -> ConfigError:
    return ConfigError([f"{filename}:{_yaml_error_line(exc, text)}: yaml: {_yaml_error_message(exc)}"])


def _yaml_error_line(exc: yaml.YAMLError, text: str) -> int:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return _mark_line(mark)
    if isinstance(exc, yaml.reader.ReaderError):
        return text.count("\n", 0, exc.position) + 1
    return 1


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    """The parser's own words, without the quoted source snippet of ``str(exc)``."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = (exc.problem or exc.context or "invalid YAML").removeprefix("but ")
        if exc.problem and exc.context:
            where = f" at line {_mark_line(exc.context_mark)}" if exc.context_mark is not None else ""
            return f"{problem} ({exc.context}{where})"
        return problem
    if isinstance(exc, yaml.reader.ReaderError):
        return f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    return str(exc)
