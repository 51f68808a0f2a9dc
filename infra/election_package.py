"""The installed election package (manifest and context) as every site reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from election.context import ElectionContext
from election.errors import FormatError
from election.manifest import Manifest
from infra.certdir import read_json
from infra.errors import SiteError


@dataclass(frozen=True)
class ElectionPackage:
    manifest: Manifest
    context: ElectionContext

    @classmethod
    def load(cls, directory: Path) -> ElectionPackage:
        try:
            manifest = Manifest.from_json(read_json(directory / "manifest.json", "manifest"))
            context = ElectionContext.from_json(read_json(directory / "context.json", "context"))
        except FormatError as error:
            raise SiteError(f"election package {directory}: {error}") from error
        if context.base_hash != manifest.base_hash:
            raise SiteError(f"election package {directory}: context is for another manifest")
        return cls(manifest, context)
