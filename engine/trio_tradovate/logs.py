"""Logging for people and for machines: the structured fields, a JSON-lines formatter, and the
command line's handler.

The library itself only ever *emits*: every logger is under ``trio_tradovate``, which carries
a :class:`logging.NullHandler` (added in the package ``__init__``), and no other package's
logger is touched. Records about a socket carry these attributes (``extra=``), so a handler
can route or index on them without parsing messages:

``socket``
    the socket's index (0 for an engine with one socket);
``generation``
    the socket's connection attempt the record is about;
``state``
    the socket's public state when the record was made (after the move, for transitions);
``fault_kind``
    for a connection that ended, what ended it (``dropped``, ``silence``, ``shutdown``, ...,
    as counted under ``fault.<kind>`` in ``Engine.counters``);
``transition``
    for a transition, the whole record (:meth:`TransitionRecord.as_dict`), wall-clock time
    included.

:class:`JsonFormatter` writes one JSON object per record with those fields;
:func:`configure` is what the ``trio-tradovate`` command uses (``--log-format json``).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

#: The structured attributes a record may carry, in the order a JSON line shows them.
FIELDS: Final = ("socket", "generation", "state", "fault_kind", "transition")

#: Logger names whose records below WARNING the command line's handler drops: the
#: ``transitions`` package reports every callback at INFO/DEBUG, which says nothing the
#: engine's own transition records do not say better. (Filtered on our handler: the
#: ``transitions`` logger itself is left alone.)
QUIET_BELOW_WARNING: Final = ("transitions",)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC wall clock), ``level``, ``logger``,
    ``message``, then whichever of :data:`FIELDS` the record carries, then ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger: message [socket N gen G state]`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        tags = []
        if record.__dict__.get("socket") is not None:
            tags.append(f"socket {record.__dict__['socket']}")
        if record.__dict__.get("generation") is not None:
            tags.append(f"gen {record.__dict__['generation']}")
        if record.__dict__.get("fault_kind") is not None:
            tags.append(f"fault {record.__dict__['fault_kind']}")
        suffix = f" [{', '.join(tags)}]" if tags else ""
        text = f"{when} {record.levelname:7} {record.name}: {record.getMessage()}{suffix}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _not_noise(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
        return True
    return not any(
        record.name == name or record.name.startswith(name + ".") for name in QUIET_BELOW_WARNING
    )


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time (a live view redirects it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: str, level: int, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (default: whatever
    ``sys.stderr`` is when a record is written), as ``text`` or ``json``.

    For the command line only (an application configures logging itself): one handler on the
    root logger, the ``transitions`` package's chatter filtered out on that handler.
    """
    handler: logging.Handler = (
        logging.StreamHandler(_Stderr()) if stream is None else logging.StreamHandler(stream)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_not_noise)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
