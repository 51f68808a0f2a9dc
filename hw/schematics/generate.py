"""Draw the wiring diagrams (SVG) from the pin map the drivers read.

    python hw/schematics/generate.py          # rewrite the SVGs beside this file
    python hw/schematics/generate.py --check  # exit 1 if an SVG is out of date

The diagrams are generated, never edited by hand: tests/hw checks they match pinmap.json.
"""

from __future__ import annotations

import argparse
import sys
from html import escape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.drivers.pinmap import (
    PI_HEADER,
    PinMap,
    gpio_signals,
    header_pin,
    load_pinmap,
)

HERE = Path(__file__).resolve().parent
ROW = 18
TOP = 60


def _pin_xy(position: int) -> tuple[int, int]:
    """Centre of a header pin: odd pins in the left column, even in the right."""
    column = 0 if position % 2 else 1
    return 180 + column * 40, TOP + ((position - 1) // 2) * ROW


def _header(used: dict[int, str]) -> list[str]:
    parts = [f'<rect x="165" y="{TOP - 15}" width="70" height="{20 * ROW + 12}" class="board"/>']
    for position, function in PI_HEADER.items():
        x, y = _pin_xy(position)
        fill = "used" if position in used else "free"
        parts.append(f'<circle cx="{x}" cy="{y}" r="5" class="{fill}"/>')
        anchor, label_x = ("end", x - 20) if position % 2 else ("start", x + 20)
        parts.append(
            f'<text x="{label_x}" y="{y + 4}" text-anchor="{anchor}" class="pin">{position} {escape(function)}</text>'
        )
    return parts


def _diagram(title: str, peripheral: str, wires: list[tuple[int, str]]) -> str:
    """Header on the left, the peripheral on the right, one line per wire."""
    used = dict(wires)
    height = TOP + 20 * ROW + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="{height}" '
        f'viewBox="0 0 800 {height}" font-family="sans-serif">',
        "<style>.board{fill:#e8f0e8;stroke:#333}.used{fill:#c00}.free{fill:#bbb}"
        ".pin{font-size:9px}.sig{font-size:11px}.wire{stroke:#c00;stroke-width:1.5;fill:none}"
        ".title{font-size:15px;font-weight:bold}</style>",
        f'<text x="20" y="24" class="title">{escape(title)}</text>',
        '<text x="165" y="42" class="sig">Raspberry Pi 40-pin header</text>',
        *_header(used),
        f'<rect x="600" y="{TOP - 15}" width="180" height="{len(wires) * 30 + 20}" rx="4" class="board"/>',
        f'<text x="610" y="{TOP - 20}" class="sig">{escape(peripheral)}</text>',
    ]
    for index, (position, signal) in enumerate(wires):
        x, y = _pin_xy(position)
        target_y = TOP + 5 + index * 30
        parts.append(f'<path d="M{x} {y} H{480 + index * 8} V{target_y} H600" class="wire"/>')
        parts.append(
            f'<text x="610" y="{target_y + 4}" class="sig">{escape(signal)} '
            f"(pin {position}, {escape(PI_HEADER[position])})</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def diagrams(pinmap: PinMap) -> dict[str, str]:
    """File name -> SVG text, for every diagram the pin map describes."""
    out: dict[str, str] = {}
    power = pinmap.pn532.power
    display = pinmap.display.power
    for kind, variant in pinmap.pn532.variants().items():
        wires = [(power.vcc_pin, "PN532 VCC"), (power.gnd_pin, "PN532 GND")]
        wires += [(header_pin(gpio), f"PN532 {signal.upper()}") for signal, gpio in gpio_signals(variant).items()]
        wires += [(display.vcc_pin, "display 5V"), (display.gnd_pin, "display GND")]
        title = f"PN532 on {kind.upper()} + {pinmap.display.model} ({pinmap.display.connector})"
        out[f"pn532-{kind}.svg"] = _diagram(title, f"PN532 ({kind.upper()})", wires)
    out["companion.svg"] = _companion(pinmap)
    return out


def _companion(pinmap: PinMap) -> str:
    companion = pinmap.companion
    rows = [(f"GP{pin}", f"key {name} → GND") for name, pin in companion.keypad.by_key().items()]
    rows += [(f"GP{companion.tamper}", "tamper switch (NC) → GND")]
    rows += [(f"GP{companion.status_led}", "status LED + 330 Ω → GND")]
    height = 90 + len(rows) * 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="560" height="{height}" '
        f'viewBox="0 0 560 {height}" font-family="sans-serif">',
        "<style>.board{fill:#e8f0e8;stroke:#333}.sig{font-size:12px}"
        ".wire{stroke:#c00;stroke-width:1.5}.title{font-size:15px;font-weight:bold}</style>",
        f'<text x="20" y="24" class="title">{escape(companion.board_model)}</text>',
        f'<text x="20" y="44" class="sig">{escape(companion.host_connection)}</text>',
        f'<rect x="20" y="60" width="120" height="{len(rows) * 24 + 10}" class="board"/>',
    ]
    for index, (pin, what) in enumerate(rows):
        y = 80 + index * 24
        parts.append(f'<text x="30" y="{y + 4}" class="sig">{pin}</text>')
        parts.append(f'<line x1="140" y1="{y}" x2="240" y2="{y}" class="wire"/>')
        parts.append(f'<text x="250" y="{y + 4}" class="sig">{escape(what)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date SVGs")
    args = parser.parse_args(argv)
    stale = []
    for name, text in diagrams(load_pinmap()).items():
        path = HERE / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} — run hw/schematics/generate.py", file=sys.stderr)
        return 1
    print(f"{'stale' if args.check else 'written'}: {', '.join(stale) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
