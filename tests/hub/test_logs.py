"""Service log lines are logfmt: one line per record, the message quoted and escaped."""

from __future__ import annotations

import logging

from infra.logs import LogfmtFormatter


def test_a_record_becomes_one_parseable_line() -> None:
    record = logging.LogRecord("station_hub.ledger", logging.WARNING, __file__, 1, 'refused "x"\nnext', None, None)
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    assert line.startswith("ts=") and line.split(" ")[0].endswith("Z")
    assert ' level=warning logger=station_hub.ledger msg="refused \\"x\\"\\nnext"' in line
