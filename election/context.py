"""The election context: what a ballot is sealed against and a record is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from election.encoding import hex_bytes
from election.errors import FormatError
from election.group import Point, point_from_hex

CONTEXT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ElectionContext:
    """Base hash, trustee set, quorum and the joint public key every ballot is encrypted to."""

    base_hash: bytes
    trustee_ids: tuple[str, ...]
    quorum: int
    joint_public_key: Point

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CONTEXT_VERSION,
            "base_hash": self.base_hash.hex(),
            "trustee_ids": list(self.trustee_ids),
            "quorum": self.quorum,
            "joint_public_key": self.joint_public_key.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> ElectionContext:
        fields = {"version", "base_hash", "trustee_ids", "quorum", "joint_public_key"}
        if not isinstance(data, dict) or set(data) != fields:
            raise FormatError(f"context: expected exactly the fields {sorted(fields)}")
        if data["version"] != CONTEXT_VERSION:
            raise FormatError(f"context: unsupported version {data['version']!r}")
        ids = data["trustee_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise FormatError("context.trustee_ids: a non-empty list of trustee ids")
        if len(set(ids)) != len(ids):
            raise FormatError("context.trustee_ids: ids must be unique")
        quorum = data["quorum"]
        if type(quorum) is not int or not 1 <= quorum <= len(ids):
            raise FormatError(f"context.quorum: must be between 1 and {len(ids)}")
        return cls(
            hex_bytes(data["base_hash"], 32, "context.base_hash"),
            tuple(ids),
            quorum,
            point_from_hex(data["joint_public_key"], "context.joint_public_key"),
        )
