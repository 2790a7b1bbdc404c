"""The live terminal dashboard (Textual): what a person watches while ``mmsa-monitor`` runs.

:class:`MonitorApp` subscribes to the :class:`~mmsa.monitor.events.EventBus` when it mounts and
renders every item it receives in a :class:`StreamView`: ScoreEvents (timeline, big current
score, per-modality scores, transcript), MonitorStatus snapshots (status bar), PartialScores (a
dim "listening" line) and ``None`` (the session ended: say so and keep the data on screen until
the user quits). :class:`StreamView` is the single-stream view on its own; the fleet view
(:mod:`mmsa.monitor.fleetview`) shows it for the stream a user selects.

The app never scores or records anything itself; it asks the running monitor through the
:class:`~mmsa.monitor.events.Controls` it was given (``q`` stops it, ``r`` toggles recording).
The CLI runs ``await app.run_async()`` in the same event loop as the pipeline.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from itertools import islice

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from mmsa.common.errors import MMSAError
from mmsa.monitor.bus import BusItem, EventBus, Feed
from mmsa.monitor.events import Controls, MonitorStatus, PartialScore, ScoreEvent
from mmsa.monitor.widgets import (
    DIM,
    MODALITY_PRESENCE,
    POLARITY_COLORS,
    ModalityPanel,
    ScorePanel,
    Timeline,
    Transcript,
    fmt_time,
    polarity_color,
    status_text,
)

log = logging.getLogger(__name__)

EVENTS_MAX = 2000  # ScoreEvents a dashboard keeps (MonitorApp.events); the session log keeps every one


class StreamView(Vertical):
    """One stream's scores: current score, modalities, timeline (+ per-modality traces), transcript, status.

    It draws what it is given and keeps only what its widgets keep (bounded: the timelines the
    last minutes, the transcript ``TRANSCRIPT_MAX_LINES`` rows). Feed it with
    :meth:`add_events`, :meth:`show_partial` and :meth:`show_status`.
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with Horizontal(id="now"):
                    yield ScorePanel(id="score")
                    yield ModalityPanel(id="modalities")
                yield Timeline(id="timeline")
                with Vertical(id="traces"):
                    for m in MODALITY_PRESENCE:
                        yield Timeline(m, id=f"trace-{m}", classes="trace")
            with Vertical(id="transcript-box"):
                yield Transcript(id="transcript")
                yield Static(id="partial")
        yield Static(id="status")

    def on_mount(self) -> None:
        self.query_one("#transcript-box").border_title = "transcript"

    def reset(self) -> None:
        """Forget every event shown (a new session of the stream begins)."""
        transcript = self.query_one(Transcript)
        transcript.events.clear()
        transcript.clear()
        for tl in self.query(Timeline):
            tl.clear()
        self.query_one(ScorePanel).show(None)
        self.query_one(ModalityPanel).show(None)

    def add_events(self, events: Sequence[ScoreEvent]) -> None:
        """Append scored utterances (oldest first); the newest becomes the current score."""
        if not events:
            return
        self.query_one(Transcript).add(events)
        for tl in self.query(Timeline):
            for event in events:
                tl.add(event)
        self.query_one(ScorePanel).show(events[-1])
        self.query_one(ModalityPanel).show(events[-1])

    def show_partial(self, partial: ScoreEvent | None, ended: bool = False) -> None:
        """The dim ``listening…`` line of the utterance still open, or ``— session ended —``."""
        if ended:
            text = Text("— session ended —", style=f"italic {DIM}")
        elif partial is None:
            text = Text("", style=DIM)
        else:
            text = Text.assemble(
                ("listening… ", f"italic {DIM}"),
                (f"{partial.score:+.2f} ", polarity_color(partial.score)),
                (partial.text.strip(), f"italic {DIM}"),
                no_wrap=True, overflow="ellipsis",
            )
        self.query_one("#partial", Static).update(text, layout=False)

    def show_status(self, status: MonitorStatus | None, missing: str = "no status") -> None:
        """The status bar; ``None``: nothing is known of the stream's health (``missing`` says why)."""
        text = status_text(status) if status is not None else Text(missing, style=f"italic {DIM}")
        self.query_one("#status", Static).update(text)


def stop_monitor(controls: Controls | None) -> None:
    """Ask the running monitor (if any) for a clean stop; a failure is logged, the UI still closes."""
    if controls is None:
        return
    try:
        controls.request_stop()
    except Exception:  # the CLI reports the pipeline's fate
        log.exception("dashboard: request_stop failed")


class StreamPage:
    """Mixin of an App or Screen that shows one stream: a top bar (``#topbar``), the :class:`StreamView`, the keys."""

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        yield StreamView(id="view")
        yield Footer()

    @property
    def view(self) -> StreamView:
        return self.query_one("#view", StreamView)  # type: ignore[attr-defined]  # App or Screen


class HelpScreen(ModalScreen[None]):
    """The ``?`` overlay: keys and how to read the screen."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
        Binding("enter", "dismiss", "Close", show=False),
        Binding("q", "app.quit", "Quit"),  # a modal screen hides the app's bindings
    ]

    def compose(self) -> ComposeResult:
        neg, neu, pos = (POLARITY_COLORS[p] for p in ("negative", "neutral", "positive"))
        text = Text.assemble(
            ("Keys\n", "bold"),
            "  q   quit (stops the monitor cleanly)\n",
            "  p   pause / resume the display (scores keep being collected)\n",
            "  r   start / stop recording\n",
            "  ?   this help (esc closes it)\n\n",
            ("Reading the screen\n", "bold"),
            "  Scores use the CMU-MOSI scale, -3 very negative .. +3 very positive:\n  ",
            ("negative", f"bold {neg}"), " below -0.5, ", ("neutral", f"bold {neu}"), " within ±0.5, ",
            ("positive", f"bold {pos}"), " above +0.5.\n",
            "  The timeline has one bar per utterance over the last few minutes;\n"
            "  a dot on the axis of a modality trace: that modality was absent.\n"
            "  conf (0..1): how clear the score is and how well the modalities agree.",
        )
        yield Static(text, id="help-body")


class MonitorApp(StreamPage, App[None]):
    """The live dashboard of one stream: a top bar, the :class:`StreamView`, the keys.

    The app keeps the last ``EVENTS_MAX`` (2000) ScoreEvents in ``events`` (a bounded deque:
    the session log keeps them all) and counts every one in ``n_events``; while paused, at most
    that many wait for the display.

    Args:
        bus: the monitor's event bus; the app subscribes on mount.
        controls: the running monitor's controls (``q`` stops it, ``r`` toggles recording);
            ``None`` for a display-only app.
        title: shown in the top bar.
    """

    CSS_PATH = "dashboard.tcss"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("r", "toggle_recording", "Record"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, bus: EventBus, controls: Controls | None = None, *, title: str = "mmsa-monitor") -> None:
        super().__init__()
        self.bus = bus
        self.controls = controls
        self.title = title
        self.events: deque[ScoreEvent] = deque(maxlen=EVENTS_MAX)  # the newest ScoreEvents, shown or not
        self.n_events = 0  # every ScoreEvent received
        self.status = bus.last_status
        self.partial: ScoreEvent | None = None
        self.paused = False
        self.ended = False
        self.note: Text | None = None  # the answer to the last key press (e.g. recording on)
        self._n_shown = 0
        self._last_shown: ScoreEvent | None = None
        self._queue: Feed | None = None

    def on_mount(self) -> None:
        self._queue = self.bus.subscribe(name="dashboard")  # ends at once if the session is already over
        self._refresh_topbar()
        self._refresh_status()
        self._refresh_partial()
        self.run_worker(self._consume(), name="bus", group="bus")

    def on_unmount(self) -> None:
        if self._queue is not None:
            self.bus.unsubscribe(self._queue)

    async def _consume(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            if item is None:
                self._end()
                return
            self.handle(item)

    # ---- bus items -----------------------------------------------------------------------

    def handle(self, item: BusItem) -> None:
        """Take one bus item into the display (or into the backlog while paused)."""
        if isinstance(item, ScoreEvent):
            self.events.append(item)
            self.n_events += 1
            self.partial = None
            if not self.paused:
                self._show_new_events()
                self._refresh_partial()
        elif isinstance(item, MonitorStatus):
            # Health stays live while paused: pausing is for reading scores, not for hiding a lost camera.
            self.status = item
            self._refresh_status()
        elif isinstance(item, PartialScore):
            self.partial = item.event
            if not self.paused:
                self._refresh_partial()
        else:  # pragma: no cover - the bus only carries the three types
            log.warning("dashboard: ignoring unknown bus item %r", type(item).__name__)
        self._refresh_topbar()

    def _end(self) -> None:
        self.ended = True
        self.partial = None
        self._refresh_partial()
        if not self.paused:
            self._show_new_events()
        self._refresh_topbar()

    def _show_new_events(self) -> None:
        n_new = min(self.n_events - self._n_shown, len(self.events))  # a long pause may have lost the oldest
        new = list(islice(self.events, len(self.events) - n_new, None))
        self._n_shown = self.n_events
        if new:
            self._last_shown = new[-1]
        self.view.add_events(new)

    # ---- rendering of the bars -------------------------------------------------------------

    def _refresh_topbar(self) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        bar.append(f" {self.title} ", style="bold")
        if self.ended:
            bar.append(" ■ SESSION ENDED ", style=f"bold {DIM}")
        if self.paused:
            bar.append(" ⏸ PAUSED ", style="bold reverse " + POLARITY_COLORS["neutral"])
            n_new = self.n_events - self._n_shown
            if n_new:
                bar.append(f" {n_new} new", style=POLARITY_COLORS["neutral"])
        elif not self.ended:
            bar.append(" ● LIVE ", style=f"bold {POLARITY_COLORS['positive']}")
        n = self._n_shown
        bar.append(f"  {n} utterance{'s' if n != 1 else ''}")
        if self._last_shown is not None:
            bar.append(f" · {fmt_time(self._last_shown.t_end)}", style=DIM)
        elif self.ended:
            bar.append(" · none were scored", style=DIM)
        if self.note is not None:  # the footer already says how to quit; the note matters more
            bar.append("  ")
            bar.append_text(self.note)
        self.query_one("#topbar", Static).update(bar, layout=False)  # fixed height

    def _refresh_status(self) -> None:
        self.view.show_status(self.status)

    def _refresh_partial(self) -> None:
        self.view.show_partial(self.partial, ended=self.ended)

    # ---- keys ------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """``q`` (and ctrl+q): stop the monitor cleanly, then close the dashboard."""
        stop_monitor(self.controls)
        self.exit()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._show_new_events()
            self._refresh_partial()
        self._refresh_topbar()

    def action_toggle_recording(self) -> None:
        red = POLARITY_COLORS["negative"]
        if self.controls is None:
            self._set_note(Text("recording is not available: no monitor attached", style=f"italic {red}"))
            return
        try:
            on = self.controls.toggle_recording()
        except MMSAError as exc:
            self._set_note(Text(f"recording: {exc}", style=f"italic {red}"), severity="error")
            return
        self.status = self.status.replace(recording=bool(on))
        self._refresh_status()
        self._set_note(Text("● recording on" if on else "recording off", style=f"bold {red}" if on else DIM))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def _set_note(self, note: Text, severity: str = "information") -> None:
        self.note = note
        self._refresh_topbar()
        if severity == "error":
            self.notify(note.plain, severity="error", timeout=6)
