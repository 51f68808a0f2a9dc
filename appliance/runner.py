"""Build and run a whole booth from its configuration: reader, keypad, outbox, hub link, UI."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from appliance.audio import AudioGuide, AudioOptions, election_document
from appliance.booth import Booth, CardReader, Election
from appliance.card import AuthMode, JpkiAuthenticator, TrustStore
from appliance.config import BoothConfig, ConfigError
from appliance.drivers.companion import (
    CompanionBoard,
    CompanionEvent,
    KeyPressed,
    LinkLost,
    LinkRestored,
    TamperChanged,
)
from appliance.outbox import Outbox
from appliance.publisher import HubAddress, HubLink
from appliance.session import events as ev
from appliance.ui.server import UiServer
from audit.errors import AuditError
from audit.service import ServiceAudit
from election.ballot import DeviceSigner
from election.errors import FormatError
from infra.election_package import ElectionPackage
from infra.errors import SiteError

log = logging.getLogger("appliance.runner")


def open_reader(config: BoothConfig) -> CardReader:
    if config.reader_kind == "pcsc":
        from appliance.drivers.pcsc import PcscTransport

        return PcscTransport(config.reader_name)
    from appliance.drivers.pn532 import open_pn532

    return open_pn532(config.reader_kind, config.reader_name, config.reader_address)


def load_election(config: BoothConfig) -> Election:
    try:
        package = ElectionPackage.load(config.election_dir)
        token_key = serialization.load_pem_public_key(config.token_key.read_bytes())
    except (SiteError, OSError, ValueError) as error:
        raise ConfigError(f"election package: {error}") from error
    if not isinstance(token_key, rsa.RSAPublicKey):
        raise ConfigError(f"{config.token_key} is not the roll's RSA public key")
    return Election(package.manifest, package.context.joint_public_key, token_key)


def start_audit(config: BoothConfig) -> ServiceAudit:
    """The booth's audit log, signed with its own key (not the device key: docs/audit-log.md §6)."""
    try:
        return ServiceAudit.start(config.audit_log, config.audit_key, f"{config.terminal_id}.booth", "booth")
    except AuditError as error:
        raise ConfigError(f"audit log: {error}") from error


def load_signer(config: BoothConfig) -> DeviceSigner:
    try:
        key = serialization.load_pem_private_key(config.files.device_key.read_bytes(), None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{config.files.device_key} is not an Ed25519 key")
        return DeviceSigner(config.terminal_id, key)
    except (OSError, ValueError, FormatError) as error:
        raise ConfigError(f"device key: {error}") from error


class BoothRunner:
    """Everything of one booth, started in order and stopped in reverse (also on failure)."""

    def __init__(
        self, config: BoothConfig, reader: CardReader | None = None, audio: AudioOptions | None = None
    ) -> None:
        self.config = config
        self._reader = reader
        self._audio = audio or AudioOptions()
        self.audio: AudioGuide | None = None
        self._closers: list[Any] = []
        self.booth: Booth | None = None
        self.ui: UiServer | None = None

    def start(self) -> BoothRunner:
        config = self.config
        try:
            election = load_election(config)
            signer = load_signer(config)
            audit = start_audit(config)
            self._closers.append(audit.stop)
            mode = AuthMode(config.card_mode)
            trust = TrustStore.from_files(map(str, config.trust_anchors), map(str, config.crls))
            outbox = Outbox(config.outbox)
            self._closers.append(outbox.close)
            files = config.files
            address = HubAddress(config.broker_host, config.broker_port, files.ca_certificate,
                                 files.device_certificate, files.device_key)  # fmt: skip
            link = HubLink(address, config.station_id, config.terminal_id, outbox)
            reader = self._reader or open_reader(config)
            if self._reader is None and hasattr(reader, "close"):
                self._closers.append(reader.close)  # type: ignore[union-attr]
            booth = Booth(
                election,
                signer,
                outbox,
                link,
                reader,
                lambda transport: JpkiAuthenticator(transport, mode, trust),
                audit=audit,
                timeouts=config.timeouts,
            )
            self.booth = booth
            if self._audio.enabled:  # the audio ballot: what the screen shows, in the headphones
                self.audio = AudioGuide.for_election(election_document(election.manifest), self._audio).start()
                self._closers.append(self.audio.stop)
                booth.view_listeners.append(self.audio.on_view)
            link.start()
            self._closers.append(link.stop)
            booth.start()
            self._closers.append(booth.stop)
            if config.companion_port:
                board = CompanionBoard(config.companion_port, listener=self._companion_event).open()
                self._closers.append(board.close)
            self.ui = UiServer(booth, config.ui_port).start()
            self._closers.append(self.ui.stop)
        except BaseException:
            self.stop()
            raise
        return self

    def _companion_event(self, event: CompanionEvent) -> None:
        booth = self.booth
        assert booth is not None
        if isinstance(event, KeyPressed) and event.key.value in ev.Key.__members__.values():
            booth.submit(ev.KeyPress(ev.Key(event.key.value), tactile=True))
        elif isinstance(event, TamperChanged):  # the booth's worker records it in the audit log
            booth.link.publish_status(tamper=event.opened)
            booth.set_problem("tamper", "enclosure open" if event.opened else None)
        elif isinstance(event, LinkLost):
            log.warning("companion board lost: %s", event.reason)
        elif isinstance(event, LinkRestored):
            log.info("companion board firmware %s", event.firmware_version)

    def stop(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> BoothRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
