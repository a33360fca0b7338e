"""Server-sent events: the ``text/event-stream`` format, parsed line by line.

Pure: the HTTP client feeds it the lines of a response and gets back whole
messages. Follows the WHATWG rules that matter here: ``field: value`` lines, a
blank line ends a message, ``:`` starts a comment, ``data`` lines join with
newlines, and ``id`` persists across messages until changed.
"""

from __future__ import annotations

from typing import NamedTuple


class SseMessage(NamedTuple):
    event: str  # "message" unless the server named it
    data: str
    id: str | None  # the last event ID in force when the message ended


class SseParser:
    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self.last_id: str | None = None

    def feed(self, line: str) -> SseMessage | None:
        """Take one line (without its line break); return a message it completes."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SseMessage(self._event or "message", "\n".join(self._data), self.last_id)
            self._data = []
            self._event = ""
            return message
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None
