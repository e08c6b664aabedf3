"""Dump the organisms' needle probes as token ids to JSON (run in the MAIN venv).

The kvpress bench runs in its own virtual environment (kvpress needs transformers <5.3, the main
package needs >=5.9), so it cannot import ``workbench``. This script is the bridge: it writes the
probes of named sets to a plain JSON file that the bench reads.

    .venv/bin/python kvpress_bench/dump_trials.py --sets needle-256,needle-512 --n 32 \
        --out kvpress_bench/data/needle_trials.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def dump(sets: list[str], n: int) -> dict:
    from workbench.organisms.datasets import load_probes

    out: dict = {"format": "kvpress-bench-trials/1", "sets": {}}
    for name in sets:
        probes = load_probes(name, n)
        out["sets"][name] = [
            {
                "prompt": [int(t) for t in p.prompt],
                "answer": [int(t) for t in p.answer],
                "depth": float(p.meta.get("depth", float("nan"))),
                "needle_span": [int(x) for x in p.meta.get("needle_span", ())],
            }
            for p in probes
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="needle-256,needle-512", help="comma-separated probe set names")
    ap.add_argument("--n", type=int, default=32, help="probes per set (a prefix of the set)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    data = dump([s.strip() for s in args.sets.split(",") if s.strip()], args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data))
    print(f"wrote {sum(len(v) for v in data['sets'].values())} trials to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
