"""The election context: what a ballot is sealed against and a record is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from election.encoding import check_version, hex_bytes, strict_int
from election.errors import FormatError
from election.group import Point, point_from_hex
from election.ids import check_trustee_id

CONTEXT_VERSION = 1
MAX_TRUSTEES = 2**16 - 1
"""Trustee indices are 1..n and n fits in 16 bits (formats.md §7)."""


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
        check_version(data, CONTEXT_VERSION, "context")
        ids = data["trustee_ids"]
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_TRUSTEES:
            raise FormatError(f"context.trustee_ids: a list of 1 to {MAX_TRUSTEES} trustee ids")
        for i, trustee_id in enumerate(ids):
            check_trustee_id(trustee_id, f"context.trustee_ids[{i}]")
        if len(set(ids)) != len(ids):
            raise FormatError("context.trustee_ids: ids must be unique")
        quorum = strict_int(data["quorum"], "context.quorum", minimum=1, maximum=len(ids))
        return cls(
            hex_bytes(data["base_hash"], 32, "context.base_hash"),
            tuple(ids),
            quorum,
            point_from_hex(data["joint_public_key"], "context.joint_public_key"),
        )
