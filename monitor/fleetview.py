"""The fleet dashboard (Textual): every stream in one list, and any one of them in full.

:class:`FleetApp` consumes a :class:`~mmsa.monitor.fleet.Feed` (``mmsa-monitor watch`` feeds it
from a broker, the local multi-stream monitor from its event buses) and keeps a
:class:`~mmsa.monitor.fleet.StreamState` per stream. The main screen lists the streams, sorted
by node and stream name, three lines each: presence, latest score with polarity colour,
modality gauges and a sparkline of recent scores; the last transcript line; health (drops,
errors, latency, lag, what was degraded). An offline stream is greyed and says since when.
Arrow keys and enter (or a click) open :class:`StreamScreen`, the single-stream view of the
dashboard (:class:`~mmsa.monitor.dashboard.StreamView`) fed from that stream's events; escape
returns to the list.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, ListItem, ListView, Static

from mmsa.monitor.dashboard import StreamPage, stop_monitor
from mmsa.monitor.events import Controls, MonitorStatus, ScoreEvent
from mmsa.monitor.fleet import Feed, FeedItem, FeedStatus, StreamKey, StreamState
from mmsa.monitor.widgets import (
    DIM,
    EIGHTHS,
    MODALITY_PRESENCE,
    POLARITY_COLORS,
    SCORE_MAX,
    fmt_time,
    load_parts,
    polarity_color,
    score_bar,
)

NAME_W = 20  # the stream's name column; longer names end in an ellipsis
SPARK_MAX = 24  # recent scores in a row's sparkline at most


def clock_time(t: float | None) -> str:
    """``time.time()`` as local ``HH:MM:SS``."""
    return "?" if t is None else datetime.fromtimestamp(t).strftime("%H:%M:%S")


def sparkline(scores: list[float], width: int) -> Text:
    """The newest ``width`` scores as one row of bars: -3 lowest, +3 full, coloured by polarity."""
    line = Text(no_wrap=True, overflow="crop")
    for s in scores[-width:] if width > 0 else []:
        level = 1 + round((min(max(s, -SCORE_MAX), SCORE_MAX) + SCORE_MAX) / (2 * SCORE_MAX) * 7)
        line.append(EIGHTHS[level], style=polarity_color(s))
    return line


def presence_text(state: StreamState) -> Text:
    """``● online since 19:32:00``, ``○ offline`` (no time: learned from a retained status), ``? unknown``."""
    if state.online is None:
        return Text("? unknown", style=DIM)
    since = f" since {clock_time(state.since)}" if state.since is not None else ""
    if state.online:
        return Text(f"● online{since}", style=POLARITY_COLORS["positive"])
    return Text(f"○ offline{since}", style=f"bold {DIM}")


def row_lines(state: StreamState, width: int) -> list[Text]:
    """The three lines of a stream's row in the fleet list (greyed when the stream is offline)."""
    ev = state.latest
    head = Text(no_wrap=True, overflow="ellipsis")
    name = state.key.label if len(state.key.label) <= NAME_W else state.key.label[: NAME_W - 1] + "…"
    head.append("● " if state.online else "○ ", style=POLARITY_COLORS["positive"] if state.online else DIM)
    head.append(f"{name:<{NAME_W}} ", style="bold")
    if ev is None:
        head.append(f"{'—':>6} {'no score':<10}", style=DIM)
    else:
        head.append(f"{ev.score:+6.2f} ", style=f"bold {polarity_color(ev.score)}")
        head.append(f"{ev.polarity:<10}", style=polarity_color(ev.score))
    for m in MODALITY_PRESENCE:
        mod = ev.modalities.get(m) if ev else None
        head.append(f" {m[0]} ", style=DIM)
        head.append_text(score_bar(mod.score if mod and mod.present else None, 7))
    spark_w = min(SPARK_MAX, width - head.cell_len - 2)
    if spark_w > 0:
        head.append("  ")
        head.append_text(sparkline([e.score for e in state.history], spark_w))

    words = Text("  ", no_wrap=True, overflow="ellipsis")
    words.append_text(presence_text(state))
    if ev is not None:
        words.append(f" · {state.n_events} utt · {fmt_time(ev.t_end)}  ", style=DIM)
        words.append(f"“{ev.text.strip()}”" if ev.text.strip() else "(no words)", style="italic")
    if state.partial is not None and state.online is not False:
        words.append("  speaking…", style=f"italic {DIM}")

    health = Text("  ", no_wrap=True, overflow="ellipsis")
    if state.health is None:
        health.append("no health published", style=f"italic {DIM}")
    else:
        parts = load_parts(state.health)
        if state.health.message:
            parts.append(Text(state.health.message, style="italic"))
        health.append_text(Text(" · ", style=DIM).join(parts))
    lines = [head, words, health]
    if state.online is False:
        for line in lines:
            line.stylize(DIM)  # greyed: drawn over every colour
    return lines


class StreamRow(Widget):
    """One stream in the fleet list; draws its StreamState whenever asked to refresh."""

    def __init__(self, state: StreamState) -> None:
        super().__init__()
        self.state = state

    def render(self) -> Text:
        block = Text("\n").join(row_lines(self.state, self.content_size.width))
        block.no_wrap = True
        return block


class FleetList(ListView):
    """The list of streams: up/down move, enter (or a click) opens the highlighted stream."""

    BINDINGS = [Binding("enter", "select_cursor", "Open stream")]


class StreamScreen(StreamPage, Screen[None]):
    """The single-stream view of one stream of the fleet; escape returns to the list."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "All streams"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, state: StreamState) -> None:
        super().__init__()
        self.state = state
        self.key = state.key
        self._session = ""

    def on_mount(self) -> None:
        self._fill()
        self._refresh_status()
        self._refresh_topbar()

    def _fill(self) -> None:
        self.view.reset()
        history = list(self.state.history)
        self._session = history[-1].session if history else ""
        self.view.add_events(history)
        self.view.show_partial(self.state.partial)

    def take(self, item: FeedItem) -> None:
        """Show an item the stream's state has just taken."""
        if isinstance(item, ScoreEvent):
            if item.session != self._session:  # a new session: its times restart at zero
                self._fill()
            else:
                self.view.add_events([item])
        if isinstance(item, MonitorStatus):
            self._refresh_status()
        self.view.show_partial(self.state.partial)
        self._refresh_topbar()

    def _refresh_status(self) -> None:
        self.view.show_status(self.state.health, missing="no health published by this stream (an older monitor)")

    def _refresh_topbar(self) -> None:
        s = self.state
        bar = Text(no_wrap=True, overflow="ellipsis")
        bar.append(f" {s.key.label} ", style="bold")
        bar.append_text(presence_text(s))
        if s.health is not None and s.health.finished:
            bar.append("  ■ SESSION ENDED", style=f"bold {DIM}")
        bar.append(f"  {s.n_events} utterance{'s' if s.n_events != 1 else ''}")
        if s.latest is not None:
            bar.append(f" · {fmt_time(s.latest.t_end)}", style=DIM)
        self.query_one("#topbar", Static).update(bar, layout=False)


class FleetApp(App[None]):
    """Every stream of a fleet in one list; enter or a click opens one stream's full view.

    Args:
        feed: the :class:`~mmsa.monitor.fleet.Feed` to show (``(StreamKey, item)`` pairs and
            ``(None, FeedStatus)``).
        controls: the local multi-stream monitor's controls (``q`` calls ``request_stop()``);
            ``None`` for ``mmsa-monitor watch``.
        title: shown in the top bar.
    """

    CSS_PATH = ["dashboard.tcss", "fleet.tcss"]
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(self, feed: Feed, controls: Controls | None = None, *, title: str = "mmsa-monitor fleet") -> None:
        super().__init__()
        self.feed = feed
        self.controls = controls
        self.title = title
        self.streams: dict[StreamKey, StreamState] = {}
        self.feed_status: FeedStatus | None = None
        self.ended = False
        self._order: list[StreamKey] = []  # the list's rows, sorted
        self._rows: dict[StreamKey, StreamRow] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="fleet-topbar")
        yield Static("waiting for streams…", id="fleet-empty")
        yield FleetList(id="fleet")
        yield Static(id="fleet-status")
        yield Footer()

    @property
    def fleet_list(self) -> ListView:
        return self.query_one("#fleet", ListView)

    def on_mount(self) -> None:
        self.fleet_list.focus()
        self._refresh_bars()
        self.run_worker(self._consume(), name="feed", group="feed")

    async def _consume(self) -> None:
        try:
            async for key, item in self.feed:
                if self.handle(key, item) and key is not None and key not in self._rows:
                    await self._add_row(key)
            self.ended = True
            self._refresh_bars()
        except NoMatches:
            # An item that arrives while the app closes finds its widgets gone (Textual removes the screens
            # before it cancels the workers): the feed ends with the app. Anywhere else it is a bug.
            if self.query("#fleet-topbar"):
                raise

    def handle(self, key: StreamKey | None, item: FeedItem | FeedStatus) -> bool:
        """Take one feed item; True when it changed what is shown."""
        if isinstance(item, FeedStatus):
            self.feed_status = item
            self._refresh_bars()
            return True
        assert key is not None, "only a FeedStatus comes without a stream"
        state = self.streams.get(key)
        if state is None:
            state = self.streams[key] = StreamState(key)
        if not state.apply(item):
            return False
        row = self._rows.get(key)
        if row is not None:
            row.refresh()
        if isinstance(self.screen, StreamScreen) and self.screen.key == key:
            self.screen.take(item)
        self._refresh_bars()
        return True

    async def _add_row(self, key: StreamKey) -> None:
        lv = self.fleet_list
        index = bisect.bisect(self._order, key)
        self._order.insert(index, key)
        row = self._rows[key] = StreamRow(self.streams[key])
        item = ListItem(row)
        if index >= len(lv):
            await lv.append(item)
        else:
            await lv.insert(index, [item])
        if lv.index is None:
            lv.index = 0
        elif index <= lv.index:
            lv.index += 1  # keep the highlight on the same stream
        self.query_one("#fleet-empty").display = False

    def _refresh_bars(self) -> None:
        states = self.streams.values()
        n_on = sum(1 for s in states if s.online)
        n_off = sum(1 for s in states if s.online is False)
        top = Text(no_wrap=True, overflow="ellipsis")
        top.append(f" {self.title} ", style="bold")
        if self.ended:
            top.append(" ■ ENDED ", style=f"bold {DIM}")
        top.append(f"  {len(self.streams)} stream{'s' if len(self.streams) != 1 else ''}")
        top.append(f" · {n_on} online", style=POLARITY_COLORS["positive"] if n_on else DIM)
        top.append(f" · {n_off} offline", style=f"bold {POLARITY_COLORS['negative']}" if n_off else DIM)
        self.query_one("#fleet-topbar", Static).update(top, layout=False)
        status = Text(no_wrap=False)
        fs = self.feed_status
        if fs is not None:
            status.append(fs.text, style="" if fs.ok else f"bold {POLARITY_COLORS['negative']}")
        n_dropped = getattr(self.feed, "n_dropped", 0)
        if n_dropped:
            status.append(f" · {n_dropped} feed items dropped (the display lagged)", style=POLARITY_COLORS["negative"])
        self.query_one("#fleet-status", Static).update(status)

    def on_list_view_selected(self, message: ListView.Selected) -> None:
        row = message.item.query_one(StreamRow)
        self.push_screen(StreamScreen(self.streams[row.state.key]))

    async def action_quit(self) -> None:
        """``q``: stop the local monitor (if any) cleanly, then close."""
        stop_monitor(self.controls)
        self.exit()
