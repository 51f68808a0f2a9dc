"""The site layer's service loop: how every long-running service (ledger, roll, forwarder,
gateway worker) runs, stops and tells systemd how it is.

    service = LedgerService(station)
    run_service(service, "ledger")        # until SIGTERM or SIGINT

- SIGTERM and SIGINT call the service's ``stop()``; its ``run()`` returns after cleaning up.
- sd_notify(3) without libsystemd: a datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for
  the abstract namespace). ``READY=1`` once the service says it is ready (its
  :class:`Vitals`), ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` **only while the service's
  main loop keeps beating** from READY=1 on (a wedged loop stops the pings and systemd restarts the unit;
  systemd watches only from READY=1, a start that waits on worker processes is not a stall),
  ``STOPPING=1`` when the stop starts. Without ``$NOTIFY_SOCKET`` (a test, a console,
  ``station-hub run``) nothing is sent and nothing fails.
- Start, readiness, a stalled loop and the stop are logged, at info at least (a service's log
  level is lowered to info if it was higher); :class:`BrokerWatch` logs the loss and the regain
  of a broker connection the same way in every service.

A service takes part by owning a ``vitals`` attribute: it calls ``vitals.beat()`` at every
turn of its main loop and ``vitals.mark_ready()`` when it serves (connected and subscribed).
A service without one is ready as soon as it runs, and its watchdog pings prove only that
the process lives.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from typing import Protocol

log = logging.getLogger("infra.service")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


class Service(Protocol):
    def run(self) -> None: ...
    def stop(self) -> None: ...


class Notifier:
    """sd_notify over the datagram socket systemd names in the environment (stdlib only)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get(NOTIFY_SOCKET) or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_interval: float | None = None
        """WatchdogSec= of the unit, in seconds (None: no watchdog for this process)."""
        usec, pid = env.get(WATCHDOG_USEC), env.get(WATCHDOG_PID)
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``NAME=value`` lines in one datagram; False if there is nowhere or it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as error:
            if not self._failed:  # once: a dead socket must not flood the log
                log.warning("cannot notify the service manager at %s: %s", self.address.lstrip("\0"), error)
                self._failed = True
            return False
        return True


class Vitals:
    """What a service's main loop tells the service loop: ready yet, and still turning."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self._beat = time.monotonic()

    def beat(self) -> None:
        self._beat = time.monotonic()

    def mark_ready(self) -> None:
        """Serving from now on; the watchdog counts from here (as systemd's does, from READY=1),
        not from a start that may have waited on worker processes."""
        self._beat = time.monotonic()
        self.ready.set()

    def since_beat(self) -> float:
        return time.monotonic() - self._beat


class BrokerWatch:
    """Logs a client's broker connection at info: first connect, loss (with reason), regain."""

    def __init__(self, logger: logging.Logger, who: str, broker: str) -> None:
        self.logger, self.who, self.broker = logger, who, broker
        self._lost_at: float | None = None
        self._ever = False
        self._lock = threading.Lock()

    def up(self, detail: str = "") -> None:
        suffix = f"; {detail}" if detail else ""
        with self._lock:
            if not self._ever:
                self.logger.info("%s connected to %s%s", self.who, self.broker, suffix)
            elif self._lost_at is not None:
                self.logger.info("%s regained %s after %.1f s%s", self.who, self.broker,
                                 time.monotonic() - self._lost_at, suffix)  # fmt: skip
            else:
                self.logger.info("%s reconnected to %s%s", self.who, self.broker, suffix)
            self._ever, self._lost_at = True, None

    def down(self, reason: object, stopping: bool = False) -> None:
        with self._lock:
            if stopping or self._lost_at is not None:
                return
            self._lost_at = time.monotonic()
        self.logger.warning("%s lost %s (%s); reconnecting", self.who, self.broker, reason)

    def refused(self, reason: object) -> None:
        self.logger.error("%s: %s refused the connection: %s", self.who, self.broker, reason)


def run_service(
    service: Service,
    name: str,
    *,
    notifier: Notifier | None = None,
    vitals: Vitals | None = None,
    install_signals: bool = True,
) -> None:
    """Run ``service`` until it stops (SIGTERM/SIGINT call its ``stop()``), keeping systemd told."""
    notifier = notifier or Notifier()
    vitals = vitals if vitals is not None else getattr(service, "vitals", None)
    root = logging.getLogger()
    if root.getEffectiveLevel() > logging.INFO:  # a service's journal shows start, broker and recovery
        root.setLevel(logging.INFO)
    done = threading.Event()
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            notifier.send("STOPPING=1")
            log.info("%s stopping", name)
        service.stop()

    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
    watchdog = notifier.watchdog_interval
    log.info("%s starting (pid %d)%s", name, os.getpid(),
             f"; watchdog {watchdog:g} s" if watchdog else "")  # fmt: skip
    pinger = threading.Thread(
        target=_notify_loop, args=(name, notifier, vitals, done, stopping), name=f"{name}-notify", daemon=True
    )
    pinger.start()
    try:
        service.run()
    finally:
        done.set()
        if not stopping.is_set():
            stopping.set()
            notifier.send("STOPPING=1")
        pinger.join(2)
        log.info("%s stopped", name)


def _notify_loop(name: str, notifier: Notifier, vitals: Vitals | None, done: threading.Event,
                 stopping: threading.Event) -> None:  # fmt: skip
    watchdog = notifier.watchdog_interval
    ping_every = watchdog / 2 if watchdog else None
    next_ping = time.monotonic()
    ready = False
    stalled = False
    while not done.is_set():
        if not ready and (vitals is None or vitals.ready.is_set()):
            ready = True
            notifier.send("READY=1", f"STATUS={name} running", f"MAINPID={os.getpid()}")
            log.info("%s ready", name)
        if ready and ping_every is not None and time.monotonic() >= next_ping and not stopping.is_set():
            age = 0.0 if vitals is None else vitals.since_beat()
            if age < watchdog:  # type: ignore[operator]
                notifier.send("WATCHDOG=1")
                if stalled:
                    log.info("%s main loop turning again", name)
                stalled = False
            elif not stalled:
                log.error("%s main loop stalled for %.0f s: no more watchdog pings", name, age)
                stalled = True
            next_ping = time.monotonic() + ping_every
        done.wait(0.1 if not ready else min(0.5, ping_every or 0.5))
