"""The two forms a reviewed ballot can leave the terminal in: cast (with the token) or spoiled.

The ballot is sealed for review without the token. Casting keeps the very ciphertexts and
proofs the voter saw sealed, sets the token and signs again (``SealedBallot.with_token``);
challenging publishes it as it was sealed — token null — with its opening.
"""

from __future__ import annotations

from election.ballot import BallotOpening, SealedBallot
from election.encoding import canonical_bytes
from election.manifest import Manifest
from protocol.messages import MESSAGE_VERSION, SPOILED_TYPE


def cast_payload(ballot: SealedBallot) -> bytes:
    return canonical_bytes(ballot.to_json())


def spoiled_payload(ballot: SealedBallot, opening: BallotOpening, manifest: Manifest) -> bytes:
    """The challenged ballot with its opening (docs/ledger.md, "Spoiled ballot")."""
    if ballot.token is not None:
        raise ValueError("a spoiled ballot must not carry the voter's token")
    return canonical_bytes(
        {
            "version": MESSAGE_VERSION,
            "type": SPOILED_TYPE,
            "ballot": ballot.to_json(),
            "opening": opening.to_json(manifest),
        }
    )
