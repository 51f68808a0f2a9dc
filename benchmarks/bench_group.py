"""Group operations side by side in one process: edwards25519 through PyNaCl (the group of
record format 1) against ristretto255 (RFC 9496, the group of format 2 — docs/design-record-v2.md)
through each candidate binding, ``rbcl`` and ``pysodium``. Prints µs per operation and the
ratio to the format-1 group.

    pip install 'polling-station[bench]'   # rbcl, pysodium
    python benchmarks/bench_group.py --repeat 2000
"""

from __future__ import annotations

import argparse
import secrets
import timeit
from collections.abc import Callable

import nacl.bindings as nacl


def _measure(function: Callable[[], object], repeat: int) -> float:
    """Best of five runs of ``repeat`` calls, in µs per call."""
    return min(timeit.repeat(function, number=repeat, repeat=5)) / repeat * 1e6


def edwards25519(repeat: int) -> dict[str, float]:
    scalar = nacl.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
    point = nacl.crypto_scalarmult_ed25519_base_noclamp(scalar)
    other = nacl.crypto_scalarmult_ed25519_base_noclamp(nacl.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64)))

    def validate() -> bool:
        # Format 1 checks a point is on the curve, canonical, and in the prime-order subgroup.
        return nacl.crypto_core_ed25519_is_valid_point(point)

    return {
        "decode + validate": _measure(validate, repeat),
        "variable-base multiplication": _measure(lambda: nacl.crypto_scalarmult_ed25519_noclamp(scalar, point), repeat),
        "fixed-base multiplication": _measure(lambda: nacl.crypto_scalarmult_ed25519_base_noclamp(scalar), repeat),
        "addition": _measure(lambda: nacl.crypto_core_ed25519_add(point, other), repeat),
    }


def ristretto(binding: object, repeat: int) -> dict[str, float]:
    b = binding
    scalar = b.crypto_core_ristretto255_scalar_reduce(secrets.token_bytes(64))  # type: ignore[attr-defined]
    point = b.crypto_scalarmult_ristretto255_base(scalar)  # type: ignore[attr-defined]
    other = b.crypto_scalarmult_ristretto255_base(  # type: ignore[attr-defined]
        b.crypto_core_ristretto255_scalar_reduce(secrets.token_bytes(64))  # type: ignore[attr-defined]
    )
    return {
        "decode + validate": _measure(lambda: b.crypto_core_ristretto255_is_valid_point(point), repeat),  # type: ignore[attr-defined]
        "variable-base multiplication": _measure(lambda: b.crypto_scalarmult_ristretto255(scalar, point), repeat),  # type: ignore[attr-defined]
        "fixed-base multiplication": _measure(lambda: b.crypto_scalarmult_ristretto255_base(scalar), repeat),  # type: ignore[attr-defined]
        "addition": _measure(lambda: b.crypto_core_ristretto255_add(point, other), repeat),  # type: ignore[attr-defined]
    }


def fixed_base_table(repeat: int) -> dict[str, float]:
    """The fixed-base precomputation issue 18 asks to measure, for the joint key K (libsodium has
    tables for G only): a 4-bit window table of K built once, then ``s·K`` as 64 table additions
    through rbcl. Every addition is one FFI call, so the table is kept only if it beats one
    variable-base multiplication; it does not (format 2 does not use it)."""
    import rbcl as b

    def scalar() -> bytes:
        return b.crypto_core_ristretto255_scalar_reduce(secrets.token_bytes(64))

    key = b.crypto_scalarmult_ristretto255_base(scalar())
    windows, width = 64, 16
    table = []
    base = key
    for _ in range(windows):
        row, acc = [None], base
        for _j in range(1, width):
            row.append(acc)
            acc = b.crypto_core_ristretto255_add(acc, base)
        table.append(row)
        base = acc  # 16 · base
    s = scalar()
    nibbles = [(s[i // 2] >> (4 * (i % 2))) & 15 for i in range(windows)]

    def windowed() -> bytes | None:
        total = None
        for row, nibble in zip(table, nibbles, strict=True):
            if nibble:
                total = row[nibble] if total is None else b.crypto_core_ristretto255_add(total, row[nibble])
        return total

    assert windowed() == b.crypto_scalarmult_ristretto255(s, key)
    return {
        "variable-base s·K (libsodium)": _measure(lambda: b.crypto_scalarmult_ristretto255(s, key), repeat),
        "fixed-base s·K (4-bit table)": _measure(windowed, max(1, repeat // 10)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    columns = {"edwards25519 (PyNaCl)": edwards25519(args.repeat)}
    for name in ("rbcl", "pysodium"):
        try:
            module = __import__(name)
        except (ImportError, OSError) as exc:
            print(f"{name}: not available ({exc}); pip install 'polling-station[bench]'")
            continue
        columns[f"ristretto255 ({name})"] = ristretto(module, args.repeat)
    operations = list(next(iter(columns.values())))
    print(f"{'µs per operation':<30}" + "".join(f"{name:>26}" for name in columns))
    baseline = columns["edwards25519 (PyNaCl)"]
    for op in operations:
        cells = []
        for figures in columns.values():
            ratio = baseline[op] / figures[op] if figures[op] else 0
            cells.append(f"{figures[op]:>16.1f} ({ratio:4.1f}×)")
        print(f"{op:<30}" + "".join(f"{cell:>26}" for cell in cells))
    print()
    for op, figure in fixed_base_table(args.repeat).items():
        print(f"{op:<34}{figure:>10.1f} µs")


if __name__ == "__main__":
    main()
