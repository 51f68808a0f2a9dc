"""One fault-injection mechanism for every service, so fault tests can kill -9 a process at an
exact point: with ``POLLING_STATION_FAILPOINT=<name>`` in its environment, the process reaching
:func:`failpoint` ``<name>`` prints ``FAILPOINT <name>`` to stderr and stops itself (SIGSTOP),
waiting for the test's kill. Production mode refuses to start with the variable set
(appliance/production.py), so no installed device can be made to stop this way.

Points: ``booth-after-seal``, ``booth-after-commit``, ``booth-before-checkin-spent``,
``ledger-before-commit``,
``ledger-after-commit``, ``ledger-before-batch``, ``ledger-after-batch``, ``gateway-after-commit``.
"""

from __future__ import annotations

import os
import signal
import sys

FAILPOINT_ENV = "POLLING_STATION_FAILPOINT"


def armed() -> str | None:
    """The failpoint this process was started with, if any."""
    return os.environ.get(FAILPOINT_ENV) or None


def failpoint(name: str) -> None:
    if armed() == name:
        print(f"FAILPOINT {name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
