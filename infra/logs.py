"""One structured log line format for every service (hub, booth, gateway): logfmt.

    ts=2026-11-25T02:41:07.123Z level=warning logger=station_hub.ledger msg="refused a ballot from t1: …"

Machine-readable (key=value, the message quoted) and still readable on a console; the
journal on a Pi keeps it as it is.
"""

from __future__ import annotations

import logging
import time


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        quoted = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return (
            f'ts={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} msg="{quoted}"'
        )


def configure_logging(level: int) -> None:
    """Send every logger's records to stderr as logfmt lines (once per process)."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
