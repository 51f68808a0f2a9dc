"""`audit-log`: export, verify, create a key, append from a shell script, check for leaks.

audit-log verify /var/lib/polling-station/audit/booth.log --key booth-audit.pub
audit-log export /var/lib/polling-station/audit/booth.log --out /media/usb/booth.log
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from audit.chain import AuditEntry, EntryFormatError, public_key_hex, verify_lines
from audit.errors import AuditError
from audit.events import EVENT_KINDS
from audit.keys import create_signing_key, load_public_key, load_signing_key
from audit.privacy import find_forbidden
from audit.store import AuditLog, read_log

EXIT_PROBLEM = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_PROBLEM) -> NoReturn:
    click.echo(f"audit-log: {message}", err=True)
    sys.exit(code)


def _text_line(line: bytes) -> str:
    try:
        entry = AuditEntry.parse(line)
    except EntryFormatError as error:
        return f"?      (unreadable entry: {error})"
    fields = " ".join(f"{key}={value}" for key, value in sorted(entry.data.items()))
    return f"{entry.seq:<6} {entry.time} {entry.kind:<22} {fields}".rstrip()


@click.group(help="Hash-chained, signed audit log of a polling-station device (docs/audit-log.md).")
def main() -> None:
    pass


@main.command(help="Check every entry of LOG: signatures, sequence and chain. Exit 1 on any problem.")
@click.argument("log_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path), help="the device's audit public key")
@click.option("--expect-head", help="hash of an entry recorded earlier (e.g. in the closing report)")
def verify(log_file: Path, key_file: Path, expect_head: str | None) -> None:
    try:
        key = load_public_key(key_file)
        lines, torn = read_log(log_file)
        expected = bytes.fromhex(expect_head) if expect_head else None
    except ValueError:
        _fail("--expect-head must be a hex entry hash", EXIT_USAGE)
    except AuditError as error:
        _fail(str(error), EXIT_USAGE)
    result = verify_lines(lines, key, expected)
    if torn:
        click.echo(f"note: {len(torn)} bytes after the last complete line (an append in progress or cut short)")
    for problem in result.problems:
        click.echo(f"PROBLEM {problem}")
    summary = f"{result.entries} entries of log {result.log_id!r}, head {result.head.last_hash.hex()}"
    if not result.ok:
        _fail(f"does NOT verify: {len(result.problems)} problem(s); {summary}")
    click.echo(f"ok: {summary}")


@main.command(help="Copy LOG's complete entries (for hand-over), as JSON lines or as readable text.")
@click.argument("log_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="write here instead of stdout")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "text"]), default="jsonl", show_default=True)
def export(log_file: Path, out: Path | None, fmt: str) -> None:
    try:
        lines, torn = read_log(log_file)
    except AuditError as error:
        _fail(str(error), EXIT_USAGE)
    if torn:
        click.echo(f"audit-log: left out {len(torn)} bytes of an incomplete last line", err=True)
    if fmt == "jsonl":
        data = b"".join(line + b"\n" for line in lines)
    else:
        data = "".join(_text_line(line) + "\n" for line in lines).encode()
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)
        click.echo(f"exported {len(lines)} entries to {out}", err=True)


@main.command(help="Create a device audit key KEY_FILE (mode 0600) and KEY_FILE.pub; print the public key.")
@click.argument("key_file", type=click.Path(path_type=Path, dir_okay=False))
def keygen(key_file: Path) -> None:
    try:
        key = create_signing_key(key_file)
    except AuditError as error:
        _fail(str(error), EXIT_USAGE)
    click.echo(public_key_hex(key.public_key()))


@main.command(help=f"Append one event to LOG (for shell scripts). KIND is one of: {', '.join(EVENT_KINDS)}.")
@click.argument("log_file", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("kind")
@click.argument("fields", nargs=-1, metavar="[FIELD=VALUE]...")
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path), help="the audit private key")
@click.option("--log-id", required=True, help="the log's id, e.g. terminal-07.booth")
def append(log_file: Path, kind: str, fields: tuple[str, ...], key_file: Path, log_id: str) -> None:
    event = EVENT_KINDS.get(kind)
    if event is None:
        _fail(f"{kind!r} is not an audit event kind", EXIT_USAGE)
    data = {}
    try:
        for item in fields:
            name, sep, text = item.partition("=")
            if not sep or name not in event.fields:
                _fail(f"{item!r}: expected FIELD=VALUE with FIELD one of {sorted(event.fields)}", EXIT_USAGE)
            data[name] = event.fields[name].parse(text)
        with AuditLog.open(log_file, load_signing_key(key_file), log_id) as audit_log:
            entry = audit_log.append(kind, **data)
    except AuditError as error:
        _fail(str(error))
    click.echo(f"appended seq {entry.seq}, head {entry.hash.hex()}")


@main.command(help="Report every line of LOG holding one of the strings in FORBIDDEN_FILE (one per line).")
@click.argument("log_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("forbidden_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def scan(log_file: Path, forbidden_file: Path) -> None:
    forbidden = [line for line in forbidden_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        leaks = find_forbidden(log_file, forbidden)
    except ValueError as error:
        _fail(str(error), EXIT_USAGE)
    for leak in leaks:
        click.echo(f"LEAK {leak}")
    if leaks:
        _fail(f"{len(leaks)} forbidden string occurrence(s)")
    click.echo(f"ok: none of {len(forbidden)} forbidden strings occurs in {log_file}")
