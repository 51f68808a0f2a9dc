"""Tally and decryption for the central office, over an exported election record.

The tally adds the cast ballots' ciphertexts as they stream from ``ballots/`` (no single
ballot is ever decrypted), each present trustee computes a decryption share of the totals
with its own key file, any ``quorum`` of them combine into the totals, and the results are
written as ``results.json`` (the record's format) and as an Election Results Reporting file
in the NIST SP 1500-100 v2 common data format (JSON).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from election.encoding import parse_json
from election.errors import ElectionError
from election.keyceremony import Trustee
from election.manifest import Manifest
from election.pool import WorkerLost
from election.record import BALLOTS, DECRYPTION, RESULTS, TALLY, DirectoryRecord, RecordWriter
from election.tally import DecryptionShare, EncryptedTally, Results, add_ballot_files, decrypt_totals
from gateway.central import CentralElection, load_election_package
from gateway.errors import GatewayError

NIST_RESULTS_FILE = "results-nist.json"
Progress = Callable[[str, int, int], None]


def tally_record(
    record: Path, manifest: Manifest, progress: Progress, *, workers: int = 1, cluster: str | None = None
) -> EncryptedTally:
    """Add every cast ballot of the record on ``workers`` cores (or a Dask cluster); writes ``tally.json``."""
    try:
        tally = add_ballot_files(
            DirectoryRecord(record), manifest, BALLOTS, workers=workers, cluster=cluster,
            progress=lambda done, total: progress("adding ballots", done, total),
        )  # fmt: skip
    except ElectionError as error:
        raise GatewayError(str(error)) from error
    except WorkerLost as error:
        raise GatewayError(f"{error}; no tally was written") from error
    RecordWriter(record).write(TALLY, tally.to_json(manifest))
    return tally


def load_trustee_keys(paths: Sequence[Path], election: CentralElection) -> list[Trustee]:
    trustees = []
    for path in paths:
        try:
            trustee = Trustee.from_secret_json(parse_json(Path(path).read_bytes(), max_size=65536))
        except (OSError, ElectionError) as error:
            raise GatewayError(f"trustee key file {path}: {error}") from error
        if trustee.base_hash != election.manifest.base_hash:
            raise GatewayError(f"trustee key file {path} is for another election")
        if trustee.trustee_id not in election.context.trustee_ids:
            raise GatewayError(f"trustee key file {path}: {trustee.trustee_id} is not a trustee of this election")
        trustees.append(trustee)
    return trustees


def tally_and_decrypt(
    record: Path,
    key_files: Sequence[Path],
    progress: Progress = lambda stage, done, total: None,
    *,
    reporting_unit: str = "central-office",
    workers: int = 1,
    cluster: str | None = None,
) -> Results:
    """Tally the record on ``workers`` cores, let the given trustees decrypt the totals, write
    every results file."""
    election = load_election_package(Path(record))
    trustees = load_trustee_keys(key_files, election)
    if len({t.trustee_id for t in trustees}) < election.context.quorum:
        raise GatewayError(f"{len(trustees)} trustee key files given, {election.context.quorum} needed to decrypt")
    tally = tally_record(Path(record), election.manifest, progress, workers=workers, cluster=cluster)
    writer = RecordWriter(record)
    shares = []
    for done, trustee in enumerate(trustees, start=1):
        share = DecryptionShare.compute(trustee, tally)
        writer.write(f"{DECRYPTION}/{trustee.trustee_id}.json", share.to_json(election.manifest, tally))
        shares.append(share)
        progress("trustees decrypting", done, len(trustees))
    try:
        results = decrypt_totals(tally, shares, list(election.trustees), election.context.quorum)
    except ElectionError as error:
        raise GatewayError(f"decryption failed: {error}") from error
    writer.write(RESULTS, results.to_json(election.manifest))
    writer.write(NIST_RESULTS_FILE, nist_results(election.manifest, results, reporting_unit))
    return results


def _text(names: dict[str, str]) -> dict[str, Any]:
    return {
        "@type": "ElectionResults.InternationalizedText",
        "Text": [
            {"@type": "ElectionResults.LanguageString", "Language": language, "Content": content}
            for language, content in sorted(names.items())
        ],
    }


def nist_results(
    manifest: Manifest, results: Results, reporting_unit: str, generated: dt.datetime | None = None
) -> dict[str, Any]:
    """NIST SP 1500-100 v2 ``ElectionReport`` (JSON), one summary count per selection.

    Ids are the manifest's ids, prefixed by their kind so they stay unique across kinds. Every
    contest is a ``CandidateContest`` whose ``VotesAllowed`` is its limit.
    """
    moment = (generated or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    unit_id = f"gpu-{reporting_unit}"
    candidates, contests = [], []
    for contest in manifest.contests:
        selections = []
        for order, selection in enumerate(contest.selections, start=1):
            candidate_id = f"cand-{contest.id}-{selection.id}"
            candidate = {"@type": "ElectionResults.Candidate", "@id": candidate_id, "BallotName": _text(selection.name)}
            candidates.append(candidate)
            selections.append(
                {
                    "@type": "ElectionResults.CandidateSelection",
                    "@id": f"sel-{contest.id}-{selection.id}",
                    "CandidateIds": [candidate_id],
                    "SequenceOrder": order,
                    "VoteCounts": [
                        {
                            "@type": "ElectionResults.VoteCounts",
                            "GpUnitId": unit_id,
                            "Type": "total",
                            "Count": results.totals[contest.id, selection.id],
                        }
                    ],
                }
            )
        contests.append(
            {
                "@type": "ElectionResults.CandidateContest",
                "@id": f"con-{contest.id}",
                "Name": contest.name["en"],
                "BallotTitle": _text(contest.name),
                "ElectoralDistrictId": unit_id,
                "VotesAllowed": contest.limit,
                "BallotSelection": selections,
            }
        )
    return {
        "@type": "ElectionResults.ElectionReport",
        "Format": "summary-contest",
        "GeneratedDate": moment.isoformat().replace("+00:00", "Z"),
        "Issuer": "polling-station central office",
        "IssuerAbbreviation": "central",
        "SequenceStart": 1,
        "SequenceEnd": 1,
        "Status": "unofficial-complete",
        "VendorApplicationId": "polling-station gateway 0.1.0",
        "GpUnit": [
            {
                "@type": "ElectionResults.ReportingUnit",
                "@id": unit_id,
                "Type": "other",
                "OtherType": "central-office",
                "Name": _text({"en": reporting_unit, "ja": reporting_unit}),
            }
        ],
        "Election": [
            {
                "@type": "ElectionResults.Election",
                "@id": f"ele-{manifest.election_id}",
                "Name": _text(manifest.name),
                "Type": "general",
                "StartDate": moment.date().isoformat(),
                "EndDate": moment.date().isoformat(),
                "ElectionScopeId": unit_id,
                "Candidate": candidates,
                "Contest": contests,
            }
        ],
    }
