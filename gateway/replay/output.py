"""Replay results as a terminal table, JSON, CSV, and a plot (PNG, or HTML with inline SVG)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .summary import Summary


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def rows(summaries: Sequence[Summary]) -> list[tuple[str, list[str]]]:
    """The comparison table: one (label, [cell per run]) per line."""
    reasons = sorted({r for s in summaries for r in s.rejections})
    out: list[tuple[str, list[str]]] = [
        ("period", [f"{s.period_s / 3600:.2f} h" for s in summaries]),
        ("offers (retries)", [f"{s.offers} ({s.retries})" for s in summaries]),
        ("assigned at once", [str(s.assigned_at_once) for s in summaries]),
        ("queued", [str(s.queued) for s in summaries]),
        ("rejections", [str(sum(s.rejections.values())) for s in summaries]),
    ]
    out += [(f"  {reason}", [str(s.rejections.get(reason, 0)) for s in summaries]) for reason in reasons]
    out += [
        ("customers handled", [str(s.handled) for s in summaries]),
        ("customers rejected", [str(s.rejected) for s in summaries]),
        ("customers abandoned", [str(s.abandoned) for s in summaries]),
        ("customers still open", [str(s.open) for s in summaries]),
        ("waited", [str(s.waited) for s in summaries]),
        ("wait p50 / p95", [f"{_s(s.wait_p50_s)} / {_s(s.wait_p95_s)}" for s in summaries]),
        ("handle p50 / p95", [f"{_s(s.handle_p50_s)} / {_s(s.handle_p95_s)}" for s in summaries]),
    ]
    if any(s.manual_refused for s in summaries):
        out.append(("manual sessions refused", [str(s.manual_refused) for s in summaries]))
    width = max(len(s.occupancy_total()) for s in summaries)
    for n in range(width):
        cells = [_pct(s.occupancy_total()[n]) if n < len(s.occupancy_total()) else "-" for s in summaries]
        out.append((f"agent time with {n} sessions", cells))
    for i, agent in enumerate(summaries[0].agents):
        out.append(
            (
                f"{agent.agent_id} mean sessions / focus",
                [f"{s.agents[i].mean_sessions:.2f} / {_pct(s.agents[i].focus_share)}" for s in summaries],
            )
        )
    return out


def table(summaries: Sequence[Summary], *, header: Sequence[str] = ()) -> str:
    lines = list(header)
    body = rows(summaries)
    names = [s.name for s in summaries]
    label_w = max(len(label) for label, _ in body)
    widths = [max(len(names[i]), *(len(cells[i]) for _, cells in body)) for i in range(len(names))]
    lines.append(" " * label_w + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True)))
    for label, cells in body:
        lines.append(label.ljust(label_w) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    for s in summaries:
        lines += [f"{s.name}: {note}" for note in s.notes]
    return "\n".join(lines)


def as_json(summaries: Sequence[Summary], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "runs": [s.as_dict() for s in summaries]}, indent=2)


def as_csv(summaries: Sequence[Summary]) -> str:
    """Long format: run, metric, agent, value (one figure a line)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "metric", "agent", "value"])
    for s in summaries:
        d = s.as_dict()
        flat: list[tuple[str, str, Any]] = [
            ("period_s", "", d["period"]["seconds"]),
            ("offers", "", s.offers),
            ("customers", "", s.customers),
            ("retries", "", s.retries),
            ("assigned_at_once", "", s.assigned_at_once),
            ("queued", "", s.queued),
        ]
        flat += [(f"rejected.{reason}", "", n) for reason, n in sorted(s.rejections.items())]
        flat += [(f"fate.{k}", "", v) for k, v in d["fate"].items()]
        flat += [
            ("waited", "", s.waited),
            ("wait_p50_s", "", s.wait_p50_s),
            ("wait_p95_s", "", s.wait_p95_s),
            ("handle_p50_s", "", s.handle_p50_s),
            ("handle_p95_s", "", s.handle_p95_s),
            ("manual_refused", "", s.manual_refused),
        ]
        flat += [(f"occupancy.{n}", "", round(v, 4)) for n, v in enumerate(s.occupancy_total())]
        for a in s.agents:
            flat += [(f"occupancy.{n}", a.agent_id, round(v, 4)) for n, v in enumerate(a.occupancy)]
            flat += [("mean_sessions", a.agent_id, round(a.mean_sessions, 3))]
            flat += [("focus_share", a.agent_id, round(a.focus_share, 4))]
        for metric, agent, value in flat:
            writer.writerow([s.name, metric, agent, "" if value is None else value])
    return buffer.getvalue()


class PlotError(Exception):
    """The plot cannot be made (matplotlib missing, unknown file type, unwritable)."""


def plot(summaries: Sequence[Summary], path: str, *, title: str = "Capacity what-if replay") -> None:
    """Rejections by reason and waits per run, and the occupancy histogram, into ``path``
    (``.png``; or ``.html``: a self-contained page with the figure as inline SVG)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise PlotError(f"{path}: the plot is a .png or .html file")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install 'cti-gateway[replay]'") from None
    names = [s.name for s in summaries]
    xs = list(range(len(names)))
    reasons = sorted({r for s in summaries for r in s.rejections}) or ["(none)"]
    fig, (ax_rej, ax_wait, ax_occ) = plt.subplots(1, 3, figsize=(15, 4.8))
    bottom = [0.0] * len(names)
    for reason in reasons:
        values = [float(s.rejections.get(reason, 0)) for s in summaries]
        ax_rej.bar(xs, values, bottom=bottom, label=reason)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax_rej.set_title("Rejections by reason")
    ax_rej.set_xticks(xs, names, rotation=15, ha="right")
    ax_rej.legend(fontsize="small")
    w = 0.38
    ax_wait.bar([x - w / 2 for x in xs], [s.wait_p50_s or 0.0 for s in summaries], w, label="p50")
    ax_wait.bar([x + w / 2 for x in xs], [s.wait_p95_s or 0.0 for s in summaries], w, label="p95")
    ax_wait.set_title("Wait of queued customers (s)")
    ax_wait.set_xticks(xs, names, rotation=15, ha="right")
    ax_wait.legend(fontsize="small")
    levels = max(len(s.occupancy_total()) for s in summaries)
    bar = 0.8 / len(summaries)
    for i, s in enumerate(summaries):
        occ = s.occupancy_total() + [0.0] * (levels - len(s.occupancy_total()))
        ax_occ.bar(
            [n + (i - (len(summaries) - 1) / 2) * bar for n in range(levels)], [100 * v for v in occ], bar, label=s.name
        )
    ax_occ.set_title("Agent time with n sessions in use (%)")
    ax_occ.set_xlabel("sessions in use")
    ax_occ.set_xticks(range(levels))
    ax_occ.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        if suffix == ".png":
            fig.savefig(path, format="png", dpi=100)
        else:
            svg = io.StringIO()
            fig.savefig(svg, format="svg")
            page = (
                '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>{html.escape(title)}</title></head><body>\n<h1>{html.escape(title)}</h1>\n"
                + _html_table(summaries)
                + "\n"
                + svg.getvalue().split("?>", 1)[-1]  # inline SVG: no XML declaration inside HTML
                + "\n</body></html>\n"
            )
            Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise PlotError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _html_table(summaries: Sequence[Summary]) -> str:
    head = "".join(f"<th>{html.escape(s.name)}</th>" for s in summaries)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for label, cells in rows(summaries)
    )
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
