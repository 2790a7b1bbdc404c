"""Rendering helpers and widgets of the single-stream view (used by the dashboard and the fleet view).

The pure helpers (``plot_timeline``, ``score_bar``, ``modality_lines``, ``transcript_line``,
``status_text``) turn ScoreEvents and MonitorStatus snapshots into Rich text and know nothing
of Textual; the widgets (:class:`Timeline`, :class:`ScorePanel`, :class:`ModalityPanel`,
:class:`Transcript`) hold what they draw. :mod:`mmsa.monitor.dashboard` assembles them into
the single-stream view; :mod:`mmsa.monitor.fleetview` reuses that view and ``score_bar``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import groupby

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Digits, RichLog, Static

from mmsa.common.scale import polarity_of
from mmsa.monitor.events import MonitorStatus, ScoreEvent

SCORE_MAX = 3.0  # the MOSI scale is [-3, 3]
TIMELINE_WINDOW_S = 180.0  # the timeline shows the last three minutes of session time
MIN_TIMELINE_S = 60.0  # ... and at least one minute, so a young session is not squeezed to the left
TRANSCRIPT_MAX_LINES = 2000  # older transcript lines scroll away (the JSONL log keeps everything)

# Polarity colors for a dark terminal (the PNG report has its own, for white paper).
POLARITY_COLORS = {"negative": "#e5534b", "neutral": "#d4a72c", "positive": "#57ab5a"}
DIM = "#6e7681"
EIGHTHS = " ▁▂▃▄▅▆▇█"  # index = how many eighths of a cell are filled from the bottom


def polarity_color(score: float) -> str:
    return POLARITY_COLORS[polarity_of(score)]


def fmt_time(t_s: float) -> str:
    """Session time as ``m:ss`` (``h:mm:ss`` past an hour)."""
    t = max(0, int(t_s))
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_score(score: float | None) -> str:
    return "  —  " if score is None else f"{score:+.2f}"


# ---- pure rendering helpers (no Textual), tested directly -----------------------------------


def plot_timeline(
    spans: Sequence[tuple[float, float, float | None]],
    width: int,
    height: int,
    now_s: float,
    window_s: float = TIMELINE_WINDOW_S,
) -> list[Text]:
    """Bars from the zero line, one per utterance span, colored by polarity.

    ``spans`` are ``(t_start, t_end, score)`` in session seconds, oldest first; a ``None`` score
    marks an utterance where this trace's modality was absent (drawn as a dim dot on the axis).
    The x axis ends at ``now_s`` (at least one minute in) and spans up to ``window_s``, so a
    young session is drawn wide and an old one scrolls. Returns ``height`` lines of ``width``
    cells: a 3-cell y gutter, the plot (an even number of rows, zero between the two middle
    ones, 1/8-cell resolution) and a row of ``m:ss`` tick labels.
    """
    gutter = 3
    plot_w = max(1, width - gutter)
    half = max(1, (height - 1) // 2)  # rows above (and below) zero
    x1 = max(min(window_s, MIN_TIMELINE_S), now_s)
    x0 = max(0.0, x1 - window_s)
    dt = (x1 - x0) / plot_w
    cols = _timeline_columns(spans, plot_w, x0, dt)
    lines: list[Text] = [Text() for _ in range(height - 1 - 2 * half)]  # pad if the height is even
    for r in range(2 * half):
        label = {0: "+3", half - 1: " 0", 2 * half - 1: "-3"}.get(r, "")
        above = r < half
        k = (half - 1 - r) if above else (r - half)  # distance of this row from the zero line
        cells = [(f"{label:<{gutter - 1}} ", DIM)] + [_bar_cell(col, above, k, half * 8) for col in cols]
        lines.append(_runs(cells))
    lines.append(Text(" " * gutter + _time_axis(x0, x1, dt, plot_w), style=DIM, no_wrap=True, overflow="crop"))
    return lines


def _timeline_columns(spans: Sequence[tuple[float, float, float | None]], plot_w: int, x0: float,
                      dt: float) -> list[tuple[float | None] | None]:
    """``(score,)`` per plot column an utterance covers (score None: the modality was absent); None: no speech."""
    cols: list[tuple[float | None] | None] = [None] * plot_w
    for t_start, t_end, score in spans:
        if t_end < x0:
            continue
        c0 = min(plot_w - 1, max(0, int((t_start - x0) / dt)))
        c1 = min(plot_w - 1, max(c0, int((t_end - x0) / dt)))
        for c in range(c0, c1 + 1):
            cols[c] = (score,)
    return cols


def _bar_cell(col: tuple[float | None] | None, above: bool, k: int, units: int) -> tuple[str, str]:
    """One cell of a bar column, ``k`` rows from the zero line (``units``: eighths from zero to +-3)."""
    score = col[0] if col else None
    if score is None:
        # The zero axis (a dot where this trace's modality was absent) or empty space.
        return ("·" if col else "▁", DIM) if above and k == 0 else (" ", "")
    n = max(1, round(min(abs(score), SCORE_MAX) / SCORE_MAX * units))
    fill = min(8, max(0, n - 8 * k)) if (score >= 0) == above else 0
    color = polarity_color(score)
    if fill == 0:
        return ("▁", DIM) if above and k == 0 else (" ", "")
    if above or fill == 8:
        return EIGHTHS[fill], color
    # A negative bar grows down from the top of the cell: draw the complementary
    # lower block in reverse video, so the part above it shows the bar color.
    return EIGHTHS[8 - fill], f"reverse {color}"


def _time_axis(x0: float, x1: float, dt: float, plot_w: int) -> str:
    """``m:ss`` tick labels under the plot, at a round step at least 8 columns apart."""
    axis = [" "] * plot_w
    step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 1800) if s / dt >= 8), 3600)
    t = (int(x0) // step + (1 if x0 % step else 0)) * step
    last_end = -1
    while t <= x1:
        label = fmt_time(t)
        c = min(int(round((t - x0) / dt)), plot_w - len(label))  # the label at the right edge ends there
        if c > last_end:
            axis[c : c + len(label)] = label
            last_end = c + len(label)
        t += step
    return "".join(axis)


def _runs(cells: list[tuple[str, str]]) -> Text:
    """One line of styled cells, as few spans as possible (a 160-column plot is redrawn often)."""
    line = Text(no_wrap=True, overflow="crop")
    for style, group in groupby(cells, key=lambda cell: cell[1]):
        line.append("".join(char for char, _ in group), style=style)
    return line


def score_bar(score: float | None, width: int) -> Text:
    """A horizontal gauge of ``score`` in [-3, 3]: filled from the center, half-cell steps."""
    width = max(3, width | 1)  # odd, so the center mark sits on zero
    half = width // 2
    cells = [Text("─", style=DIM) for _ in range(width)]
    cells[half] = Text("│", style=DIM)
    if score is not None:
        color = polarity_color(score)
        n = round(min(abs(score), SCORE_MAX) / SCORE_MAX * half * 2)  # half-cells
        for i in range((n + 1) // 2):
            partial = i == n // 2  # the last, half-filled cell when n is odd
            if score >= 0:
                cells[half + 1 + i] = Text("▌" if partial else "█", style=color)
            else:
                cells[half - 1 - i] = Text("▐" if partial else "█", style=color)
    return Text.assemble(*cells)


MODALITY_PRESENCE = {
    # modality: (present, absent)
    "text": ("transcribed", "no words"),
    "audio": ("speech heard", "no speech"),
    "vision": ("face seen", "no face"),
}


def modality_lines(event: ScoreEvent | None, width: int) -> list[Text]:
    """One line per modality: name, score, gauge, presence (face frames for vision)."""
    lines = []
    presence_w = 22
    bar_w = max(5, width - 8 - 7 - presence_w)
    for name, (yes, no) in MODALITY_PRESENCE.items():
        mod = event.modalities.get(name) if event else None
        present = bool(mod and mod.present)
        score = mod.score if present and mod else None
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"{name:<7} ", style="bold")
        line.append(f"{fmt_score(score):>6} ", style=polarity_color(score) if score is not None else DIM)
        line.append_text(score_bar(score, bar_w))
        if mod is None:
            line.append("  —", style=DIM)
        elif present:
            frames = f" ({mod.face_frames} fr)" if name == "vision" and mod.face_frames is not None else ""
            line.append(f"  ● {yes}{frames}", style=POLARITY_COLORS["positive"])
        else:
            line.append(f"  ○ {no}", style=DIM)
        lines.append(line)
    return lines


def transcript_line(event: ScoreEvent) -> Table:
    """``2:01  +1.42  it was really good · no face``, long text wrapping under itself."""
    words = Text()
    if event.text.strip():
        words.append(event.text.strip())
    else:
        words.append("(no words)", style=f"italic {DIM}")
    missing = [MODALITY_PRESENCE[m][1] for m in ("audio", "vision") if not event.modalities[m].present]
    if missing:
        words.append(" · " + ", ".join(missing), style=DIM)
    row = Table.grid(padding=(0, 1), expand=True)
    row.add_column(width=5, justify="right", style=DIM, no_wrap=True)
    row.add_column(width=5, no_wrap=True)
    row.add_column(ratio=1)
    row.add_row(fmt_time(event.t_start), Text(f"{event.score:+.2f}", style=f"bold {polarity_color(event.score)}"), words)
    return row


def status_text(status: MonitorStatus) -> Text:
    """The status bar: source, camera, mic, model, device, MQTT, recording, drops, latency, load, message."""
    ok, bad = POLARITY_COLORS["positive"], POLARITY_COLORS["negative"]
    state_color = {"ok": ok, "connected": ok, "replay": ok, "lost": bad, "missing": bad, "disconnected": bad}
    parts: list[Text] = []
    if status.source:
        parts.append(Text(status.source, style="bold"))
    for label, value in (("cam", status.camera), ("mic", status.mic)):
        parts.append(Text.assemble(f"{label}: ", (value, state_color.get(value, DIM))))
    parts.append(Text(f"{status.model or 'no model'} on {status.device}"))
    parts.append(Text.assemble("MQTT: ", (status.mqtt, state_color.get(status.mqtt, DIM))))
    parts.append(Text("● REC", style=f"bold {bad}") if status.recording else Text("rec off", style=DIM))
    parts.extend(load_parts(status))
    if status.message:
        parts.append(Text(status.message, style="italic"))
    return Text(" │ ", style=DIM).join(parts)


BEHIND_SHOWN_S = 1.0  # a lag shorter than this is the normal work in flight, not worth a warning


def load_parts(status: MonitorStatus) -> list[Text]:
    """How the stream copes: drops, latency, and (only when they matter) errors, lag and what was switched off.

    ``errors``: windows skipped because featurize/ASR/scoring failed; ``behind_s``: how far
    processing lags real time (shown from ``BEHIND_SHOWN_S``); ``degraded``: what was switched off under load.
    """
    bad, warn = POLARITY_COLORS["negative"], POLARITY_COLORS["neutral"]
    n_drops = sum(status.drops.values())
    detail = ", ".join(f"{k} {v}" for k, v in status.drops.items() if v)
    parts = [Text(f"drops: {n_drops}" + (f" ({detail})" if detail else ""), style=bad if n_drops else "")]
    if status.latency_p50_ms is None:
        parts.append(Text("latency: —", style=DIM))
    else:
        p95 = "—" if status.latency_p95_ms is None else f"{status.latency_p95_ms:.0f}"
        parts.append(Text(f"latency p50/p95 {status.latency_p50_ms:.0f}/{p95} ms"))
    if status.errors:
        parts.append(Text(f"errors: {status.errors}", style=f"bold {bad}"))
    if status.behind_s >= BEHIND_SHOWN_S:
        parts.append(Text(f"behind {status.behind_s:.1f} s", style=f"bold {warn}"))
    if status.degraded:
        parts.append(Text("degraded: " + ", ".join(status.degraded), style=f"bold {warn}"))
    return parts


# ---- widgets ------------------------------------------------------------------------------


def _block(lines: list[Text]) -> Text:
    """Lines as one Text that Textual crops instead of wrapping."""
    block = Text("\n").join(lines)
    block.no_wrap = True
    block.overflow = "ellipsis"
    return block


class Timeline(Widget):
    """The last few minutes of fused (or one modality's) scores as polarity-colored bars."""

    def __init__(self, modality: str | None = None, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.modality = modality
        self.spans: list[tuple[float, float, float | None]] = []
        self.now_s = 0.0
        self.border_title = f"{modality}" if modality else f"fused score · last {fmt_time(TIMELINE_WINDOW_S)}"

    def add(self, event: ScoreEvent) -> None:
        if self.modality is None:
            score: float | None = event.score
        else:
            mod = event.modalities.get(self.modality)
            score = mod.score if mod and mod.present else None
        self.spans.append((event.t_start, event.t_end, score))
        self.now_s = max(self.now_s, event.t_end)
        # Spans older than the window never show again; keep the list short in long sessions.
        if len(self.spans) > 4000:
            self.spans = [s for s in self.spans if s[1] >= self.now_s - TIMELINE_WINDOW_S]
        self.refresh()

    def clear(self) -> None:
        self.spans.clear()
        self.now_s = 0.0
        self.refresh()

    def render(self) -> Text:
        w, h = self.content_size
        if w < 8 or h < 3:
            return Text("")
        lines = plot_timeline(self.spans, w, h, self.now_s)
        if not self.spans and self.modality is None:
            msg = " waiting for the first utterance… "
            mid = len(lines) // 2 - 1
            pad = max(0, (w - len(msg)) // 2)
            lines[mid] = Text(" " * pad + msg, style=f"italic {DIM}")
        return _block(lines)


class ScorePanel(Vertical):
    """The current fused score, large, with polarity, confidence and when it was said."""

    def compose(self) -> ComposeResult:
        yield Digits("", id="score-digits")
        yield Static("waiting for speech…", id="score-caption")

    def show(self, event: ScoreEvent | None) -> None:
        digits = self.query_one("#score-digits", Digits)
        caption = self.query_one("#score-caption", Static)
        for pol in POLARITY_COLORS:
            digits.set_class(event is not None and event.polarity == pol, f"-{pol}")
        if event is None:
            digits.update("")
            caption.update(Text("waiting for speech…", style=f"italic {DIM}"), layout=False)
            return
        digits.update(f"{event.score:+.2f}")
        caption.update(
            Text.assemble(
                (event.polarity.upper(), f"bold {polarity_color(event.score)}"),
                (f"  conf {event.confidence:.2f}\n", ""),
                (f"#{event.seq}  {fmt_time(event.t_start)}–{fmt_time(event.t_end)}", DIM),
            ),
            layout=False,
        )


class ModalityPanel(Widget):
    """Per-modality scores of the latest utterance with presence (speech heard, face seen)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.event: ScoreEvent | None = None

    def show(self, event: ScoreEvent | None) -> None:
        self.event = event
        self.refresh()

    def render(self) -> Text:
        w = self.content_size.width
        lines = modality_lines(self.event, w)
        if self.event is not None:
            lat = self.event.latency_ms
            lines.append(
                Text(
                    f"latency asr {lat.get('asr', 0):.0f} · model {lat.get('model', 0):.0f} · "
                    f"after close {lat.get('total', 0):.0f} ms",
                    style=DIM, no_wrap=True, overflow="ellipsis",
                )
            )
        return _block(lines)


class Transcript(RichLog):
    """The utterances with their scores, newest at the bottom.

    A RichLog renders each row once, which keeps long sessions cheap; when the width changes
    the rows are rendered again so they re-wrap. It follows the newest row unless the user
    has scrolled up to read.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id, wrap=True, markup=False, max_lines=TRANSCRIPT_MAX_LINES, auto_scroll=False, min_width=20
        )
        self.events: deque[ScoreEvent] = deque(maxlen=TRANSCRIPT_MAX_LINES)  # each takes at least a line
        self._width = 0

    @property
    def following(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 1

    def add(self, events: Sequence[ScoreEvent]) -> None:
        follow = self.following
        for event in events:
            self.events.append(event)
            self.write(transcript_line(event), expand=True, scroll_end=follow)

    def on_resize(self, event: Resize) -> None:
        # The first size only records the width: RichLog's own handler renders what was written before.
        width, self._width = self._width, event.size.width
        if not self._size_known or width in (0, event.size.width):
            return
        follow = self.following
        self.clear()
        for ev in self.events:
            self.write(transcript_line(ev), expand=True, scroll_end=False)
        if follow:
            self.scroll_end(animate=False, immediate=True)

