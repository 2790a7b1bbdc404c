"""``mmsa-monitor report SESSION``: a PNG and a self-contained HTML page of a recorded session.

For people who were not watching: the fused score over the whole session colored by polarity,
the text/audio/vision traces under it, and the transcript beside them. SESSION is a session
folder (``events.jsonl``, maybe ``metadata.json``) or an ``events.jsonl`` file.

Malformed lines stop the report with one line naming the file, the line number and the problem
(exit 1); ``--skip-invalid`` leaves them out instead and the report says how many it left out.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import statistics
import textwrap
import warnings
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from mmsa.common.cli import run_cli
from mmsa.common.scale import MODALITIES, NEUTRAL_BAND, polarity_of
from mmsa.monitor.errors import MonitorError
from mmsa.monitor.events import ScoreEvent

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
METADATA_FILE = "metadata.json"
PNG_SIZE_PX = (1600, 900)
_DPI = 100
# On white paper; the terminal dashboard uses its own, brighter palette.
POLARITY_COLORS = {"negative": "#d73a49", "neutral": "#b08800", "positive": "#22863a"}
MODALITY_COLORS = {"text": "#0366d6", "audio": "#6f42c1", "vision": "#e36209"}


class ReportError(MonitorError):
    """The session cannot be read (missing folder, no events.jsonl, a malformed line)."""


@dataclass(frozen=True)
class ReportPaths:
    png: Path
    html: Path
    n_events: int
    n_skipped: int  # malformed lines left out (only with skip_invalid)


@dataclass
class Session:
    events_path: Path
    events: list[ScoreEvent]
    metadata: dict[str, Any]
    n_skipped: int = 0
    first_problem: str = ""  # the first skipped line's problem, for the report


def _fmt_time(t_s: float) -> str:
    t = max(0, int(t_s))  # truncated, as the dashboard shows it
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def load_session(session: Path, *, skip_invalid: bool = False) -> Session:
    """Read a session folder or events.jsonl; events come back in time order."""
    session = Path(session)
    if session.is_dir():
        events_path = session / EVENTS_FILE
        if not events_path.is_file():
            raise ReportError(f"{session} has no {EVENTS_FILE}: is it a session folder?")
    elif session.is_file():
        events_path = session
    else:
        raise ReportError(f"{session}: no such session folder or events file")

    events: list[ScoreEvent] = []
    n_skipped, first_problem = 0, ""
    try:
        # split("\n"), not splitlines(): a transcript may hold U+2028, which JSON leaves unescaped.
        lines = events_path.read_text(encoding="utf-8", errors="replace").split("\n")
    except OSError as exc:
        raise ReportError(f"cannot read {events_path}: {exc.strerror or exc}") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(ScoreEvent.from_json(line))
        except ValueError as exc:
            problem = f"{events_path} line {lineno}: {exc}"
            if not skip_invalid:
                raise ReportError(f"{problem} (--skip-invalid leaves such lines out)") from exc
            n_skipped += 1
            first_problem = first_problem or problem
            log.warning("skipping %s", problem)

    metadata: dict[str, Any] = {}
    meta_path = events_path.parent / METADATA_FILE
    if meta_path.is_file():
        try:
            loaded = json.loads(meta_path.read_text(encoding="utf-8"))
            metadata = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", meta_path, exc)
    events.sort(key=lambda e: (e.t_start, e.seq))
    return Session(events_path, events, metadata, n_skipped, first_problem)


def summarize(events: list[ScoreEvent]) -> dict[str, Any]:
    """Headline numbers of a session (used by the PNG title and the HTML page)."""
    if not events:
        return {"n": 0}
    speech = {p: 0.0 for p in POLARITY_COLORS}
    for e in events:
        speech[e.polarity] += max(0.0, e.t_end - e.t_start)
    total_speech = sum(speech.values()) or 1.0
    return {
        "n": len(events),
        "duration_s": max(e.t_end for e in events),
        "mean_score": statistics.fmean(e.score for e in events),
        "share": {p: v / total_speech for p, v in speech.items()},  # of speaking time
        "face_share": sum(1 for e in events if e.modalities["vision"].present) / len(events),
        "latency_p50_ms": statistics.median(e.latency_ms.get("total", math.nan) for e in events),
        "sessions": sorted({e.session for e in events}),
        "models": sorted({e.model for e in events}),
    }


def _title(session: Session, summary: dict[str, Any]) -> str:
    name = session.events_path.parent.name if session.events_path.name == EVENTS_FILE else session.events_path.name
    if not summary["n"]:
        return f"Session {name}: no scored utterances"
    share = summary["share"]
    return (
        f"Session {name} · {summary['n']} utterances over {_fmt_time(summary['duration_s'])} · "
        f"mean {summary['mean_score']:+.2f} · speaking time {share['positive']:.0%} positive, "
        f"{share['neutral']:.0%} neutral, {share['negative']:.0%} negative"
    )


def render_png(session: Session, path: Path) -> None:
    """Timeline (fused bars + modality traces) on the left, the transcript on the right."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ReportError("the session report needs matplotlib: pip install matplotlib") from exc

    events = session.events
    summary = summarize(events)
    fig = Figure(figsize=(PNG_SIZE_PX[0] / _DPI, PNG_SIZE_PX[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(_title(session, summary), x=0.01, ha="left", fontsize=12, fontweight="bold")
    if not events:
        fig.text(0.5, 0.5, "No scored utterances in this session.", ha="center", va="center", fontsize=18, color="#586069")
        fig.text(0.5, 0.43, str(session.events_path), ha="center", va="center", fontsize=10, color="#959da5")
        _save(fig, path)
        return

    grid = fig.add_gridspec(2, 2, width_ratios=(3, 2), height_ratios=(3, 2), left=0.05, right=0.99,
                            top=0.92, bottom=0.07, wspace=0.06, hspace=0.08)
    ax_fused = fig.add_subplot(grid[0, 0])
    ax_mods = fig.add_subplot(grid[1, 0], sharex=ax_fused)
    ax_text = fig.add_subplot(grid[:, 1])

    t_end = max(summary["duration_s"], 1.0)  # a session of one zero-length event still gets an axis
    for ax in (ax_fused, ax_mods):
        ax.axhspan(-NEUTRAL_BAND, NEUTRAL_BAND, color="#f6f8fa", zorder=0)
        ax.axhline(0, color="#959da5", linewidth=0.8, zorder=1)
        ax.set_ylim(-3.2, 3.2)
        ax.set_yticks([-3, -2, -1, 0, 1, 2, 3])
        ax.grid(axis="y", color="#eaecef", linewidth=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ax_fused.bar(
        [e.t_start for e in events], [e.score for e in events],
        width=[max(e.t_end - e.t_start, t_end / 800) for e in events], align="edge",
        color=[POLARITY_COLORS[e.polarity] for e in events], zorder=2,
    )
    ax_fused.set_ylabel("fused score (MOSI -3..3)")
    ax_fused.tick_params(labelbottom=False)
    ax_fused.set_xlim(0, t_end * 1.01)

    mids = [(e.t_start + e.t_end) / 2 for e in events]
    for m in MODALITIES:
        ys = [e.modalities[m].score if e.modalities[m].present else math.nan for e in events]
        n_present = sum(1 for y in ys if not math.isnan(y))
        label = f"{m} ({n_present}/{len(events)} present)"
        ax_mods.plot(mids, ys, marker="o", markersize=3, linewidth=1.2, color=MODALITY_COLORS[m], label=label, zorder=2)
    ax_mods.set_ylabel("per modality")
    ax_mods.legend(loc="lower left", ncols=3, fontsize=8, frameon=False)
    ax_mods.set_xlabel("session time")
    ticks = _time_ticks(t_end)
    ax_mods.set_xticks(ticks, [_fmt_time(t) for t in ticks])

    _draw_transcript(ax_text, events, height_px=PNG_SIZE_PX[1] * (0.92 - 0.07))
    _save(fig, path)


def _transcript_rows(event: ScoreEvent) -> list[str]:
    words = event.text.strip() or "(no words)"
    absent = [m for m in ("audio", "vision") if not event.modalities[m].present]
    if absent:
        words += "  [" + ", ".join("no face" if m == "vision" else "no speech" for m in absent) + "]"
    return textwrap.wrap(words, 60) or [""]


def pick_transcript(events: list[ScoreEvent], n_rows: int) -> list[ScoreEvent]:
    """The utterances that fit in ``n_rows`` wrapped lines: all of them, or else the strongest.

    The most positive and the most negative are taken in turn, so both sides are heard, and
    the pick comes back in time order.
    """
    if sum(len(_transcript_rows(e)) for e in events) <= n_rows:
        return events
    positive = sorted((e for e in events if e.score >= 0), key=lambda e: -e.score)
    negative = sorted((e for e in events if e.score < 0), key=lambda e: e.score)
    chosen, used = [], 0
    for e in (e for pair in zip_longest(positive, negative) for e in pair if e is not None):
        n = len(_transcript_rows(e))
        if used + n <= n_rows:
            chosen.append(e)
            used += n
    return sorted(chosen, key=lambda e: (e.t_start, e.seq))


def _draw_transcript(ax: Any, events: list[ScoreEvent], height_px: float) -> None:
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    font_pt = 9
    line_h = font_pt * 1.45 * _DPI / 72 / height_px  # in axes fraction
    chosen = pick_transcript(events, n_rows=int(1 / line_h) - 2)  # less the heading
    title = "Transcript"
    if len(chosen) < len(events):
        title = f"Transcript: the {len(chosen)} strongest of {len(events)} utterances (all in report.html)"
    ax.text(0, 1, title, fontsize=11, fontweight="bold", va="top")
    y = 1 - 1.6 * line_h
    for event in chosen:
        for i, part in enumerate(_transcript_rows(event)):
            if i == 0:
                ax.text(0, y, _fmt_time(event.t_start), fontsize=font_pt, va="top", color="#6a737d", family="monospace")
                ax.text(0.085, y, f"{event.score:+.2f}", fontsize=font_pt, va="top", fontweight="bold",
                        color=POLARITY_COLORS[event.polarity], family="monospace")
            ax.text(0.18, y, part, fontsize=font_pt, va="top", color="#24292e")
            y -= line_h


def _time_ticks(t_end_s: float) -> list[float]:
    """Ticks at round minutes or seconds, at most about ten."""
    step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800) if t_end_s / s <= 10), 3600)
    return [i * step for i in range(int(t_end_s // step) + 1)]


def _save(fig: Any, path: Path) -> None:
    with warnings.catch_warnings():
        # A transcript in a script the default font lacks must not stop the report.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        fig.savefig(path, dpi=_DPI, facecolor="white")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1600px; color: #24292e; padding: 0 1rem; }
h1 { font-size: 1.3rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
img { width: 100%; height: auto; border: 1px solid #e1e4e8; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #eaecef; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.negative { color: #d73a49; } .neutral { color: #b08800; } .positive { color: #22863a; }
.absent { color: #959da5; } .note { color: #b31d28; }
"""


def render_html(session: Session, png_path: Path, path: Path) -> None:
    """One page with the PNG embedded (base64) and the full transcript as a table."""
    events = session.events
    summary = summarize(events)
    esc = html.escape
    png_b64 = base64.b64encode(png_path.read_bytes()).decode("ascii")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mmsa-monitor report: {esc(_title(session, summary))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(_title(session, summary))}</h1>",
    ]
    if summary["n"]:
        parts.append(
            f"<p>Sessions: {esc(', '.join(summary['sessions']))} · model: {esc(', '.join(summary['models']))} · "
            f"face seen in {summary['face_share']:.0%} of utterances · median latency "
            f"{summary['latency_p50_ms']:.0f} ms · scores on the CMU-MOSI scale (-3 very negative .. +3 very positive; "
            f"|score| &lt; {NEUTRAL_BAND} is neutral).</p>"
        )
    else:
        parts.append("<p>No scored utterances in this session.</p>")
    if session.n_skipped:
        parts.append(
            f'<p class="note">{session.n_skipped} malformed line(s) left out; the first: {esc(session.first_problem)}</p>'
        )
    parts.append(f'<img alt="Session timeline and transcript" src="data:image/png;base64,{png_b64}">')
    if session.metadata:
        parts.append("<h2>Session</h2><table>")
        for key, value in session.metadata.items():
            shown = value if isinstance(value, (str, int, float, bool)) or value is None else json.dumps(value)
            parts.append(f"<tr><th>{esc(str(key))}</th><td>{esc(str(shown))}</td></tr>")
        parts.append("</table>")
    if events:
        parts.append("<h2>Transcript</h2><table><thead><tr><th>#</th><th>start</th><th>end</th><th>score</th>"
                     "<th>polarity</th><th>conf</th><th>text</th><th>audio</th><th>vision</th><th>said</th></tr></thead><tbody>")
        for e in events:
            cells = [
                f'<td class="num">{e.seq}</td>',
                f'<td class="num">{_fmt_time(e.t_start)}</td>',
                f'<td class="num">{_fmt_time(e.t_end)}</td>',
                f'<td class="num {e.polarity}"><b>{e.score:+.2f}</b></td>',
                f'<td class="{e.polarity}">{e.polarity}</td>',
                f'<td class="num">{e.confidence:.2f}</td>',
            ]
            for m in MODALITIES:
                mod = e.modalities[m]
                if mod.present and mod.score is not None:
                    cells.append(f'<td class="num {polarity_of(mod.score)}">{mod.score:+.2f}</td>')
                else:
                    cells.append(f'<td class="num absent">{"no face" if m == "vision" else "absent"}</td>')
            said = esc(e.text.strip()) or '<span class="absent">(no words)</span>'
            cells.append(f"<td>{said}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    parts.append(f'<p class="absent">Source: {esc(str(session.events_path))}</p></body></html>')
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def write_report(session: Path, out: Path | None = None, *, skip_invalid: bool = False) -> ReportPaths:
    """Write ``report.png`` and ``report.html`` for SESSION into ``out`` (default: the session folder)."""
    loaded = load_session(Path(session), skip_invalid=skip_invalid)
    out_dir = Path(out) if out is not None else loaded.events_path.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create the output folder {out_dir}: {exc.strerror}") from exc
    png, page = out_dir / "report.png", out_dir / "report.html"
    try:
        render_png(loaded, png)
        render_html(loaded, png, page)
    except OSError as exc:
        raise ReportError(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from exc
    return ReportPaths(png, page, len(loaded.events), loaded.n_skipped)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmsa-monitor report",
        description="Write a PNG and an HTML page of a recorded session: the score timeline with the "
        "text/audio/vision traces and the transcript beside it.",
    )
    p.add_argument("session", metavar="SESSION", type=Path, help="a session folder or its events.jsonl")
    p.add_argument("--out", metavar="DIR", type=Path, help="where to write report.png and report.html "
                   "(default: the session folder)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave malformed lines out (counted in the report) instead of stopping")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    paths = write_report(args.session, args.out, skip_invalid=args.skip_invalid)
    skipped = f" ({paths.n_skipped} malformed lines left out)" if paths.n_skipped else ""
    print(f"report of {paths.n_events} utterances{skipped}: {paths.png} and {paths.html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``mmsa-monitor report SESSION [--out DIR] [--skip-invalid]``; argv excludes the word ``report``."""
    return run_cli(_main, argv)
