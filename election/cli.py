"""``election``: local key ceremony, whole-election simulation, independent verification."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from election.chain import TrackingCodeTypo, normalise_tracking_code
from election.encoding import parse_json
from election.errors import ElectionError
from election.manifest import Manifest, sample_manifest
from election.pool import WorkerLost
from election.publish import gather, render
from election.record import DirectoryRecord, RecordWriter
from election.simulation import ceremony_to_files, simulate
from election.stations import lookup_tracking_code
from election.verify import CHECKS, verify_record


class ProgressLine:
    """Progress per stage on stderr: redrawn in place on a terminal, every 10 % otherwise."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self.last_shown: tuple[str, int] = ("", -1)

    def __call__(self, stage: str, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if not self.interactive and (stage, percent // 10) == self.last_shown:
            return
        self.last_shown = (stage, percent // 10)
        width = 30
        bar = "#" * (width * done // max(total, 1))
        line = f"{stage:<20} [{bar:<{width}}] {done}/{total}"
        if self.interactive:
            click.echo(f"\r{line}", nl=done == total, err=True)
        else:
            click.echo(line, err=True)


def _load_manifest(path: Path | None, contests: int, selections: int, limit: int, batch_min: int = 2) -> Manifest:
    """The given manifest, or a sample rehearsal manifest of this shape."""
    if path is None:
        return sample_manifest(contests, selections, limit, batch_min)
    try:
        return Manifest.from_json(parse_json(path.read_bytes()))
    except ElectionError as exc:
        raise click.ClickException(f"{path}: {exc}") from None


@click.group()
def main() -> None:
    """Election core: key ceremony, simulation and independent verification."""


@main.command("ceremony")
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trustees", default=5, show_default=True, help="number of trustees n")
@click.option("--quorum", default=3, show_default=True, help="trustees needed to decrypt k")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def ceremony_command(manifest_path: Path | None, trustees: int, quorum: int, out: Path) -> None:
    """Run a key ceremony in one room: writes OUT/package (public) and OUT/secrets (one key file per trustee)."""
    manifest = _load_manifest(manifest_path, 2, 3, 1)
    secrets_dir = out / "secrets"
    try:
        context, _ = ceremony_to_files(manifest, trustees, quorum, out / "package", secrets_dir)
    except ElectionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"election package: {out / 'package'}  (base hash {manifest.base_hash.hex()})")
    click.echo(f"joint public key: {context.joint_public_key.hex()}")
    click.echo(f"trustee key files ({trustees}, any {quorum} decrypt): {secrets_dir}")


@main.command("simulate")
@click.option("--ballots", default=100, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--contests", default=3, show_default=True)
@click.option("--selections", default=4, show_default=True)
@click.option("--limit", default=1, show_default=True, help="selections a voter may mark per contest")
@click.option("--trustees", default=5, show_default=True)
@click.option("--quorum", default=3, show_default=True)
@click.option("--devices", default=3, show_default=True)
@click.option("--stations", default=1, show_default=True)
@click.option("--spoil-rate", default=0.05, show_default=True)
@click.option(
    "--batch-min",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="smallest batch a station's ledger chains (the sample manifest's batch_min; a rehearsal)",
)
@click.option("--seed", type=int, default=None, help="drives the voters' choices (not the cryptography)")
def simulate_command(
    ballots: int, out: Path, manifest_path: Path | None, contests: int, selections: int, limit: int,
    trustees: int, quorum: int, devices: int, stations: int, spoil_rate: float, batch_min: int, seed: int | None,
) -> None:  # fmt: skip
    """Ceremony, BALLOTS random sealed ballots (some challenged), tally, decryption, full record."""
    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty; choose a new record folder")
    manifest = _load_manifest(manifest_path, contests, selections, limit, batch_min)
    started = time.monotonic()
    try:
        outcome = simulate(
            manifest, RecordWriter(out), ballots, trustee_count=trustees, quorum=quorum,
            device_count=devices,
            station_count=stations, spoil_rate=spoil_rate, seed=seed, progress=ProgressLine(),
        )  # fmt: skip
    except ElectionError as exc:
        raise click.ClickException(str(exc)) from None
    assert outcome.results is not None
    click.echo(f"record written to {out} in {time.monotonic() - started:.1f} s: "
               f"{outcome.cast} cast, {outcome.spoiled} challenged and spoiled")  # fmt: skip
    for contest in manifest.contests:
        click.echo(f"  {contest.id} ({contest.name['en']}):")
        for selection in contest.selections:
            total = outcome.results.totals[contest.id, selection.id]
            click.echo(f"    {selection.id:<16} {total:>7}")
    mismatches = [p for p, t in outcome.results.totals.items() if t != outcome.expected.get(p, 0)]
    if mismatches:
        raise click.ClickException(f"decrypted totals differ from the voters' choices at {mismatches}")
    click.echo("decrypted totals equal the simulated voters' choices")


@main.command("verify")
@click.argument("record", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="every core",
    help="Processes sharing the per-ballot checks (the report is the same for any number).",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    default=None,
    help="Run the per-ballot checks on a Dask cluster (scheduler address, e.g. tcp://host:8786) "
    "whose workers see RECORD at the same path.",
)
def verify_command(record: Path, workers: int, cluster: str | None) -> None:
    """Re-check a whole election record from its files; exit status 1 if any check fails."""
    started = time.monotonic()
    progress = ProgressLine()
    try:
        report = verify_record(
            DirectoryRecord(record),
            lambda done, total: progress("checking ballots", done, total),
            workers=workers,
            cluster=cluster,
        )
    except WorkerLost as exc:
        raise click.ClickException(f"{exc}; the record was NOT fully checked") from None
    for check in CHECKS:
        outcome = report.outcomes[check.number]
        mark = "PASS" if outcome.passed else "FAIL"
        click.echo(f"[{mark}] {check.number:>2}. {check.title}")
        for problem in outcome.problems:
            click.echo(f"         - {problem}")
        if outcome.problem_count > len(outcome.problems):
            click.echo(f"         … and {outcome.problem_count - len(outcome.problems)} more")
    for station_id, counts in sorted(report.stations.items()):
        click.echo(counts.describe(station_id))
    failed = report.failed_checks()
    elapsed = time.monotonic() - started
    if failed:
        click.echo(f"VERIFICATION FAILED: checks {', '.join(map(str, failed))} "
                   f"({report.ballots_checked} ballots, {elapsed:.1f} s)")  # fmt: skip
        sys.exit(1)
    click.echo(f"verification passed: all {len(CHECKS)} checks, {report.ballots_checked} ballots, {elapsed:.1f} s")


@main.command("lookup")
@click.argument("record", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("tracking_code")
def lookup_command(record: Path, tracking_code: str) -> None:
    """Find a voter's TRACKING_CODE in the published RECORD (exit status 1 if it is not there).

    Case, spaces, hyphens and full-width forms do not matter; a code typed with I, O, 0 or 1,
    which no tracking code has, is named as a typo (exit status 2) rather than "not found".
    """
    try:
        match = lookup_tracking_code(DirectoryRecord(record), tracking_code)
    except TrackingCodeTypo as typo:
        click.echo(f"{typo}: the letters are A–Z without I and O, the digits 2–9; please check the code", err=True)
        sys.exit(2)
    except (ElectionError, OSError) as exc:
        raise click.ClickException(f"the record's chains cannot be read: {exc}") from None
    if match is None:
        click.echo(f"{normalise_tracking_code(tracking_code)} is not in this record")
        sys.exit(1)
    entry = match.entry
    counted = {"cast": "counted in the tally", "late": "chained late (after the polls closed): counted"}.get(
        entry.kind, "challenged and spoiled: not counted"
    )
    click.echo(f"{entry.tracking_code}: station {match.station_id}, batch {entry.batch}, {counted}")
    click.echo(f"ballot hash {entry.ballot_hash.hex()}")


@main.command("publish")
@click.argument("record", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="every core",
    help="Processes sharing the verifier's per-ballot checks.",
)
@click.option("--replace", is_flag=True, help="Replace OUT if it already holds a site.")
def publish_command(record: Path, out: Path, workers: int, replace: bool) -> None:
    """Verify RECORD and write its static observers' site into OUT (results with charts, stations,
    the verifier's checks, a ballot tracker); it works offline and from file://. The site is
    written even when a check fails (it shows the failure); the exit status is then 1."""
    if out.exists() and any(out.iterdir()) and not replace:
        raise click.ClickException(f"{out} is not empty; choose a new folder or pass --replace")
    progress = ProgressLine()
    try:
        data = gather(DirectoryRecord(record), workers=workers, progress=progress)
    except WorkerLost as exc:
        raise click.ClickException(f"{exc}; the record was NOT fully checked and no site was written") from None
    files = render(data)
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for done, (name, content) in enumerate(sorted(files.items()), start=1):
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            progress("writing site", done, len(files))
        staging.chmod(0o755)
        _swap_into(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    failed = data.report.failed_checks()
    click.echo(f"site written to {out}: {len(files)} files; open {out / 'index.html'}")
    if failed:
        click.echo(f"VERIFICATION FAILED: checks {', '.join(map(str, failed))} (the site shows them)")
        sys.exit(1)


def _swap_into(staging: Path, out: Path) -> None:
    """Put the finished folder at ``out`` by renames: a reader sees the old site or the new one."""
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rename(out, old / "site")
    os.rename(staging, out)
    shutil.rmtree(old)


if __name__ == "__main__":
    main()
