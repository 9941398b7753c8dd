"""Write the demo partner files: a small, synthetic stand-in for the CiP-DMD export.

The three files have the layout of the real CiP-DMD quality data (see
``examples/cip_dmd/`` and README, "Partner data"), so the same mappings read
them: the same file names, encodings, separators, decimal marks, Q-DAS-like
metadata lines, part ids (raw bar, 4 digits, + piece, 2 digits) and genealogy
(milled cylinder bottoms carry the id their blank was weighed under after
sawing). The values are drawn from a seeded generator; nothing is copied from
the real files, whose licence is unclear.

Like the real files, each holds one inconsistent row, at a line fixed here:

* sawing: part 300702 weighed twice, one second apart, with two weights (line 28);
* cylinder bottoms: a row whose part id is the letter ``e`` (line 22);
* piston rods: a row whose length column carries another part's id (line 69).

Planted for the quality report to find: the saw's flag marks bars 3008-3010,
whose milled bottoms are rougher; the thread diameter and the length of the
piston rods drift over the run; a few rods are out of spec.

Run ``python examples/partner_demo/make.py`` to rewrite the committed files
(the same bytes for the same seed), or ``--out DIR`` to write them elsewhere.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

SEED = 2024
SAWN_BARS = range(3001, 3031)          # 30 raw bars of 4 blanks: 120 sawn parts
MILLED_BARS = range(3001, 3011)        # the first 40 blanks are milled
FLAGGED_BARS = range(3008, 3011)       # the saw's 0/1 flag is set on these bars
TURNED_BARS = range(4001, 4026)        # 25 bars of 4 piston rods: 100 rods
TWICE = "300702"                       # weighed twice: the second row follows the first
E_AFTER = 17                           # the 'e' row follows the 17th milled part
BAD_ROD = 60                           # 0-based index of the rod whose length id disagrees
CRLF = "\r\n"


def _num(x: float, decimals: int) -> str:
    """A value as the Q-DAS export writes it: decimal comma, no trailing zeros."""
    s = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    s = "0" if s in ("-0", "") else s
    return s.replace(".", ",")


def _step(x: float, q: float) -> float:
    """Round to the gauge's resolution ``q``."""
    return round(round(x / q) * q, 10)


def sawing(rng: np.random.Generator) -> tuple[str, dict[str, int]]:
    """Blank weights after sawing (kg; ASCII, ',' separated, '.' decimal).

    Returns the file text and the flag of each part id.
    """
    # the real sawing export starts with this dummy header line, and the mapping skips it
    lines = ["placeholder,placeholder,placeholder,placeholder"]
    t = datetime(2024, 3, 11, 8, 0, 0)
    flags: dict[str, int] = {}
    for k, bar in enumerate(SAWN_BARS):
        if k and k % 10 == 0:  # ten bars a day, from 08:00
            t = datetime(t.year, t.month, t.day, 8, 0, 0) + timedelta(days=1)
        bar_weight = 0.568 + rng.normal(0.0, 0.004)
        flag = int(bar in FLAGGED_BARS)
        for piece in range(1, 5):
            t += timedelta(seconds=int(rng.integers(35, 110)))
            part = f"{bar}{piece:02d}"
            w = bar_weight + rng.normal(0.0, 0.0012) - 0.003 * flag
            flags[part] = flag
            lines.append(f"{part},{t:%d-%m-%Y %H:%M:%S},{round(w, 10)!r},{flag}")
            if part == TWICE:
                lines.append(f"{part},{t + timedelta(seconds=1):%d-%m-%Y %H:%M:%S},"
                             f"{round(w + 0.0000761, 10)!r},{flag}")
        t += timedelta(seconds=int(rng.integers(60, 300)))
    return CRLF.join(lines) + CRLF, flags


def cylinder_bottom(rng: np.random.Generator, flags: dict[str, int]) -> str:
    """Milled cylinder bottoms (Q-DAS export; Latin-1, ';' separated, decimal comma)."""
    name = "Zylinderboden_D40"
    lines = [f"1002 Teilebezeichnung;;;{name};{name};{name};{name};",
             "2002 Merkmalbezeichnung;;;Rauhheit_Oberfläche;Parallelität;Nuttiefe;Nutdurchmesser;",
             "2101 Nennmaß;;;0,0000;0,0000;0,8000;0,0000;",
             "Messwerte;14 Teileidentnummer;4 Datum/Zeit;1 Messwert;1 Messwert;1 Messwert;1 Messwert;"]
    t = datetime(2024, 4, 8, 13, 0, 0)
    n = 0

    def row(part: str) -> str:
        nonlocal t
        t += timedelta(seconds=int(rng.integers(160, 320)))
        rough = 1.75 + rng.normal(0.0, 0.18) + 0.4 * flags.get(part, 0)
        par = _step(0.03 + rng.normal(0.0, 0.006), 0.0005)
        depth = 0.787 + rng.normal(0.0, 0.004)
        diam = _step(-0.04 + rng.normal(0.0, 0.003), 0.0005)
        return (f";{part};{t:%d.%m.%Y %H:%M:%S};{_num(rough, 3)};{_num(abs(par), 4)};"
                f"{_num(depth, 3)};{_num(diam, 4)};")

    for bar in MILLED_BARS:
        for piece in rng.permutation(4) + 1:  # the pieces of a bar reach the mill in any order
            lines.append(row(f"{bar}{piece:02d}"))
            n += 1
            if n == E_AFTER:
                lines.append(row("e"))
    return CRLF.join(lines) + CRLF


def piston_rods(rng: np.random.Generator) -> str:
    """Turned piston rods with the specification limits in the header (UTF-8, and, as in
    the real export, the umlauts already lost as U+FFFD; no timestamps)."""
    name = "Kolbenstange_V5"
    lost = "\ufffd"
    lines = ["1001 Teilenummer;;;;;;;",
             f"1002 Teilebezeichnung;{name};;{name};;{name};;",
             f"2002 Merkmalbezeichnung;Koaxalit{lost}t;;Durchmesser nach Gewinde;;L{lost}nge;;",
             f"2101 Nennma{lost};0,0000;;0,0000;;163,6000;;",
             "2104 Toleranzwert;0;;0;;0;;",
             "2110 Untere Spezifikationsgrenze;0,0000;;-0,0180;;163,4500;;",
             "2111 Obere Spezifikationsgrenze;50,0000;;0,0180;;163,7500;;",
             "Messwerte;14 Teileidentnummer;1 Messwert;14 Teileidentnummer;1 Messwert;"
             "14 Teileidentnummer;1 Messwert;"]
    parts = [f"{bar}{piece:02d}" for bar in TURNED_BARS for piece in rng.permutation(4) + 1]
    n = len(parts)
    for i, part in enumerate(parts):
        drift = i / (n - 1)  # 0 .. 1 over the run
        coax = max(2.5, rng.gamma(4.0, 8.0))
        thread = _step(-0.008 + 0.018 * drift + rng.normal(0.0, 0.0045), 0.0005)
        length = 163.62 + 0.07 * drift + rng.normal(0.0, 0.02)
        len_id = parts[i + 1] if i == BAD_ROD else part
        lines.append(f";{part};{_num(coax, 1)};{part};{_num(thread, 4)};{len_id};{_num(length, 3)};")
    return CRLF.join(lines) + CRLF


def write(out: Path, seed: int = SEED) -> list[Path]:
    """Write the three files into ``out``; returns their paths."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    saw, flags = sawing(rng)
    files = [("quality_data_sawing.csv", saw, "ascii"),
             ("quality_data_cylinder_bottom.csv", cylinder_bottom(rng, flags), "latin-1"),
             ("quality_data_piston_rods.csv", piston_rods(rng), "utf-8")]
    paths = []
    for fname, text, encoding in files:
        path = out / fname
        path.write_bytes(text.encode(encoding))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="folder to write the files into (default: beside this script)")
    ap.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    args = ap.parse_args(argv)
    for path in write(args.out, args.seed):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
