"""Logging for meshd: text for people, JSON lines for log collectors.

Configured once, in the entry point. py-libp2p detaches its logger at import
(handlers cleared, ``propagate=False``; docs/py-libp2p.md#trap-15), so this
re-attaches it after libp2p has been imported, and drops the messages that
py-libp2p logs as errors for normal events (docs/py-libp2p.md#trap-18).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

from meshd.p2p import import_libp2p

# Attributes every LogRecord has; anything else was passed with extra={...}.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}

# Messages py-libp2p 0.8.1 logs for normal events (docs/py-libp2p.md#trap-18):
# a clean EOF at the end of every DHT RPC, and identify racing a closing
# connection at shutdown.
_LIBP2P_NOISE = ("Failed to read DHT message", "Error in identify", "Error handling identify",
                 # A WARNING for every DHT get that finds nothing (the key, as
                 # given): the caller gets NotFound ("no value for ...").
                 "Value not found for key")
# And an ERROR for every stream to a peer that does not serve the protocol
# (a member without the plugin, a node stopping a service): the caller gets
# that as an error of its own (DirectMessenger: "failed to open a stream").
_LIBP2P_UNSERVED = ("Failed to open stream to peer", "protocols not supported")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        if extra:
            fields = " ".join(f"{k}={v}" for k, v in extra.items())
            head, sep, rest = text.partition("\n")
            text = f"{head} {fields}{sep}{rest}"
        return text


class _DropLibp2pNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("libp2p"):
            return True
        message = record.getMessage()
        if message.startswith(_LIBP2P_UNSERVED[0]) and _LIBP2P_UNSERVED[1] in message:
            return False
        return not any(message.startswith(noise) for noise in _LIBP2P_NOISE)


def configure(level: str, fmt: str, stream: TextIO = sys.stderr) -> None:
    """Send all logs (ours and py-libp2p's) to ``stream`` in ``fmt``."""
    # Importing libp2p detaches its logger (docs/py-libp2p.md#trap-15): import it
    # first, so that the re-attachment below is not undone by a later import.
    import_libp2p()

    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_DropLibp2pNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    libp2p_logger = logging.getLogger("libp2p")
    libp2p_logger.handlers.clear()
    libp2p_logger.propagate = True
    # py-libp2p is chatty at INFO; its warnings and errors are what operators need.
    libp2p_logger.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # Some of its modules set their own level (0.8.1's auto_connector: INFO, so
    # "initiating 100 new dials" on every start, from a component meshd stops,
    # docs/py-libp2p.md#trap-10): they follow the libp2p logger instead.
    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("libp2p.") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)
