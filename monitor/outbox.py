"""A bounded on-disk FIFO of MQTT messages not yet acknowledged by the broker (SQLite).

Every QoS 1 ScoreEvent is appended here first and removed only after its PUBACK, so events
produced while the broker is away (or lost with a connection) are delivered later, in order.
Beyond ``max_items`` the oldest messages are dropped and counted; they remain in the session
log. Used from the event loop's thread only (each operation is one small transaction).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .errors import PublisherError


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    def __init__(self, path: str | Path, max_items: int = 10_000) -> None:
        self.path = Path(path)
        self.max_items = max(1, max_items)
        self.dropped = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL)"
            )
        except (sqlite3.Error, OSError) as exc:  # OSError: its folder cannot be made (a parent is a file, no permission)
            raise PublisherError(f"{self.path}: cannot open the MQTT outbox ({getattr(exc, 'strerror', None) or exc})") from exc

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def append(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; drop (and count) the oldest ones beyond ``max_items``."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO outbox (topic, payload, qos, retain) VALUES (?, ?, ?, ?)",
                             (topic, payload, qos, int(retain)))
            excess = len(self) - self.max_items
            if excess > 0:
                self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,))
                self.dropped += excess

    def peek(self, n: int = 16) -> list[OutboxMessage]:
        """The oldest ``n`` messages, oldest first (they stay until :meth:`remove`)."""
        rows = self._db.execute("SELECT id, topic, payload, qos, retain FROM outbox ORDER BY id LIMIT ?", (n,))
        return [OutboxMessage(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in rows]

    def remove(self, message_id: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))

    def close(self) -> None:
        self._db.close()
