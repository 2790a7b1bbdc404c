"""The JSONL session log: one ScoreEvent per line, written before any other sink sees the event.

:class:`SessionLog` is a ``DURABLE`` sink (``mmsa.monitor.bus``): the bus hands it each event
synchronously inside ``publish``, and it is the first sink a pipeline attaches, so an event is in
the file (flushed to the OS) before the dashboard, MQTT or anything else can see it. Partial scores
and status snapshots are not logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .bus import BusItem, Overflow, Sink
from .errors import PublisherError
from .events import ScoreEvent


class SessionLog(Sink):
    """Append-only JSONL file; each line is flushed to the OS as soon as it is written."""

    name = "jsonl"
    overflow = Overflow.DURABLE

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise PublisherError(f"{self.path}: cannot write the session log ({exc.strerror or exc})") from exc
        self.n_events = 0

    def accept(self, item: BusItem) -> None:
        if isinstance(item, ScoreEvent):
            self.write(item)

    async def run(self) -> None:
        """Close the file (fsync) once the bus closed."""
        await self.closed()
        self.close()

    def write(self, event: ScoreEvent) -> None:
        if self._fh is None:
            raise PublisherError(f"{self.path}: the session log is closed")
        self._fh.write(event.to_json() + "\n")
        self._fh.flush()
        self.n_events += 1

    def release(self) -> None:
        self.close()

    def close(self) -> None:
        """Flush and fsync, then close; the file is closed even when the flush fails (which still raises)."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            try:
                fh.close()
            except OSError:  # the same failed flush again (a full disk): already raised above
                pass


def read_events(path: str | Path) -> Iterator[ScoreEvent]:
    """The events of a JSONL session log (each validated against the contract)."""
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield ScoreEvent.from_json(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: {exc}") from exc


def read_lines(path: str | Path) -> list[dict]:
    """The raw JSON objects of a session log (for tools that only need some fields)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def compare_events(recorded: str | Path, replayed: str | Path, tolerance: float = 1e-3) -> str:
    """One line comparing a replay's scores with those recorded live (matched by window times)."""
    old = {(round(e.t_start, 3), round(e.t_end, 3)): e for e in read_events(recorded)}
    new = {(round(e.t_start, 3), round(e.t_end, 3)): e for e in read_events(replayed)}
    if not old:
        return f"replay: the recorded log {recorded} has no events to compare"
    both = sorted(set(old) & set(new))
    diffs = [abs(old[k].score - new[k].score) for k in both]
    same = sum(d <= tolerance for d in diffs)
    worst = max(diffs, default=0.0)
    line = f"replay reproduced {same}/{len(old)} recorded scores (max |difference| {worst:.4f})"
    if len(both) < len(old) or len(new) > len(both):
        line += f"; windows: {len(old)} recorded, {len(new)} replayed, {len(both)} in common"
    return line
