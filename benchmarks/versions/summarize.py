"""Markdown summary of benchmarks/versions/results.jsonl (latest run per backend)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str = "benchmarks/versions/results.jsonl") -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for backend in ("sqlite", "postgresql"):
        mine = [r for r in rows if r["backend"] == backend]
        if not mine:
            continue
        run = mine[-1].get("run")
        mine = [r for r in mine if r.get("run") == run]
        print(f"\n### {backend} (run {run})\n")
        print("| step | wall s | client CPU s | server CPU s | load1 | detail |")
        print("|---|---:|---:|---:|---:|---|")
        for r in mine:
            if r["step"] == "create":
                detail = f"{r['version']}: {r['changes']}, {'snapshot' if r['snapshot'] else 'delta'}, " \
                         f"version tables {r['version_bytes'] / 1e6:.2f} MB ({r['ratio_to_first']}x first)"
            elif r["step"] == "read":
                detail = f"{r['version']}: {r['size']} labels"
            elif r["step"] == "diff":
                detail = f"{r['a']} -> {r['b']}: {r['relabeled']} relabeled"
            elif r["step"] == "storage":
                detail = (f"version tables {r['first_version_bytes'] / 1e6:.2f} MB after v0, "
                          f"{r['all_versions_bytes'] / 1e6:.2f} MB after all ({r['ratio']}x); "
                          f"whole database {r['db_bytes'] / 1e6:.0f} MB")
            elif r["step"] == "insert":
                detail = f"{r['samples']} samples + {r['annotations']} annotations, bulk"
            else:
                detail = f"{r.get('version', '')} ok={r.get('ok')}"
            print(f"| {r['step']} | {r.get('seconds', '')} | {r.get('cpu_seconds', '')} | "
                  f"{r.get('server_cpu_seconds', '')} | {r['load1']} | {detail} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
