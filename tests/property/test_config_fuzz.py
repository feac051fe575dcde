"""``check-config`` on mutated copies of the shipped configuration never shows a traceback.

Each example takes ``config/gateway.yaml`` and applies a few mutations (a value replaced by
something nasty - YAML tags, date-like values, deep nesting, aliases, odd numbers, text -
lines deleted, duplicated, re-indented, random characters inserted). Whatever comes out,
``cti-gateway check-config`` exits 0 or 2 and every problem is one ``file:line: field:
message`` line; a file it accepts is one ``run`` can build the gateway from (the two agree).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.registry import default_registry
from gateway.app import build_app
from gateway.cli import main
from gateway.config_loader import load_config

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "gateway.yaml"
LINES = SHIPPED.read_text(encoding="utf-8").splitlines()
#: Lines of the form ``key: value`` (value replaced by the mutations), by index.
VALUE_LINES = [i for i, line in enumerate(LINES) if re.match(r"^\s*(- )?[A-Za-z_][\w-]*: \S", line)]

NASTY_VALUES = [
    "2024-13-45",
    "2024-02-30",
    "2001-12-14 21:59:43.10 -25:00",
    "!!timestamp x",
    "!!timestamp 2024-13-45",
    "!!int x",
    "!!float x",
    "!!bool x",
    "!!null x",
    "!!binary x",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a]",
    "!!map [1]",
    "!!seq {a: 1}",
    "!!str",
    "!foo bar",
    "!python/object:os.system x",
    "0x_",
    "0b_",
    "0o9",
    "1:_",
    "._",
    ".inf",
    "-.nan",
    "1e999",
    "-0",
    "99999999999999999999999999",
    "~",
    "''",
    "[" * 200 + "]" * 200,
    "{a: " * 100 + "1" + "}" * 100,
    "&a [*a]",
    "*nowhere",
    "&x 1",
    "${UNSET_VARIABLE_FOR_FUZZ}",
    "${",
    "$${x}",
    '"\\ud800"',
    '"\\x00"',
    "\u202e\u0000",
    "{? [a]: b}",
    "[a, b]: c",
    "? a",
    "|\n  text",
    ">-",
    "- - -",
    "'unterminated",
    "x" * 5000,
]

mutation = st.one_of(
    st.tuples(
        st.just("value"),
        st.sampled_from(VALUE_LINES),
        st.one_of(st.sampled_from(NASTY_VALUES), st.text(max_size=20)),
    ),
    st.tuples(st.just("delete"), st.integers(0, len(LINES) - 1), st.none()),
    st.tuples(st.just("duplicate"), st.integers(0, len(LINES) - 1), st.none()),
    st.tuples(st.just("indent"), st.integers(0, len(LINES) - 1), st.sampled_from(["", " ", "   ", "\t", "      "])),
    st.tuples(
        st.just("insert"),
        st.integers(0, len(LINES) - 1),
        st.text(alphabet=st.sampled_from([*":-[]{}!&*#|>'\"%@?,\t \n\\$", "a", "1", "\u00e9", "\x85"]), max_size=8),
    ),
)


def mutate(steps: list[tuple[str, int, str | None]]) -> str:
    lines = list(LINES)
    for kind, index, arg in steps:
        index %= len(lines) if lines else 1
        if not lines:
            break
        if kind == "value":
            key, sep, _ = lines[index].partition(": ")
            lines[index] = f"{key}{sep or ': '}{arg}"
        elif kind == "delete":
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, lines[index])
        elif kind == "indent":
            lines[index] = (arg or "") + lines[index].lstrip()
        else:
            cut = len(lines[index]) // 2
            lines[index] = lines[index][:cut] + (arg or "") + lines[index][cut:]
    return "\n".join(lines) + "\n"


PROBLEM = re.compile(r"(?P<file>.+?):(?P<line>\d+): (?P<field>[^\n]+?): (?P<message>[^\n]+)")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-fuzz")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(mutation, min_size=1, max_size=4))
def test_check_config_never_tracebacks_on_mutated_shipped_config(
    workdir: Path, steps: list[tuple[str, int, str | None]]
) -> None:
    path = workdir / "gateway.yaml"
    text = mutate(steps)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["check-config", str(path)])  # an exception here is the bug
    assert status in (0, 2), (status, err.getvalue())
    if status == 2:
        problems = err.getvalue().splitlines()
        assert problems and out.getvalue() == ""
        for problem in problems:
            match = PROBLEM.fullmatch(problem)
            assert match and match["file"] == str(path), problem
            assert 1 <= int(match["line"]) <= text.count("\n") + 1, problem
        return
    assert out.getvalue().startswith(f"{path}: OK (")
    # what check-config accepts, run builds (the store URL and the adapters' settings included)
    config = load_config(path, vendor_check=default_registry().vendor_problems)
    build_app(config, registry=default_registry(), base_dir=workdir)


def test_the_shipped_file_itself_is_accepted(workdir: Path) -> None:
    assert mutate([]) == SHIPPED.read_text(encoding="utf-8")
    assert main(["check-config", str(SHIPPED)]) == 0
