#!/usr/bin/python3
"""Wait until a local HTTP server answers, so the kiosk never shows an error page at boot.

Used as the kiosk unit's ExecStartPre: exits 0 as soon as URL returns any HTTP response,
1 after --timeout seconds (systemd then restarts the kiosk unit, which waits again).
Standard library only: it runs with the system Python, outside the product's virtualenv.
"""

import argparse
import sys
import time
import urllib.error
import urllib.request

POLL_INTERVAL = 0.5


def answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # the server is up, whatever it thinks of this request
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    while True:
        remaining = deadline - time.monotonic()
        if answers(args.url, timeout=max(0.1, min(2.0, remaining))):
            return 0
        if remaining <= 0:
            print(f"wait-for-http: {args.url} did not answer within {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(min(POLL_INTERVAL, max(0.0, remaining)))


if __name__ == "__main__":
    sys.exit(main())
