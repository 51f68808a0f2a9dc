"""The central CRL is re-signed before it expires (a stale one would make the central broker
refuse every hub): `gateway renew-crl --if-due`, and at every `gateway broker` start."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from gateway.central import Central
from gateway.cli import main
from infra import pki
from infra.pki import StationCA, load_crl


def test_the_central_crl_is_renewed_when_due_and_left_alone_otherwise(
    central: Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    crl_file = central.directory / "ca" / "crl.pem"
    before = crl_file.read_bytes()
    result = CliRunner().invoke(main, ["renew-crl", str(central.directory), "--if-due"])
    assert result.exit_code == 0 and "nothing to do" in result.output
    assert crl_file.read_bytes() == before
    with monkeypatch.context() as patch:
        patch.setattr(pki, "CRL_VALIDITY", dt.timedelta(days=1))
        StationCA.load(central.directory / "ca").write_crl()
    result = CliRunner().invoke(main, ["renew-crl", str(central.directory), "--if-due"])
    assert result.exit_code == 0 and "re-signed" in result.output, result.output
    assert load_crl(crl_file).next_update_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=29)
