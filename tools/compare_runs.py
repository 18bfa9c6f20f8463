#!/usr/bin/env python3
"""Compare two run folders figure by figure: every number and string of report.json except wall
times and throughputs, and the sha256 of every checkpoint's weights and optimizer moments.

    python3 tools/compare_runs.py RUN_A RUN_B

Exits 0 when they agree, 1 otherwise (and lists every difference). A key present in one report
and missing from the other is a difference too. Used to show that a refactor changed no result.
"""
import hashlib
import json
import pathlib
import sys

# Figures that measure the machine, not the model: left out of the comparison.
TIMING = ("wall_s", "seconds", "tokens_per_s", "train_tokens_per_s", "mfu", "sample_s", "score_s", "ladder_wall_s", "elapsed_s")


def timing(path):
    last = path[-1] if path else ""
    return (
        any(last == t or last.endswith("_" + t) for t in TIMING)
        or "stage_seconds" in path
        or path[:2] == ("run", "hardware")
        or path[:1] == ("run",) and last in ("threads", "total")
    )


def diff(a, b, path, out):
    if timing(path):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                if not timing(path + (k,)):
                    out.append(f"{'.'.join(path + (k,))}: only in {'B' if k not in a else 'A'}")
                continue
            diff(a[k], b[k], path + (k,), out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{'.'.join(path)}: {len(a)} items vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, path + (str(i),), out)
    elif a != b:
        out.append(f"{'.'.join(path)}: {a!r} vs {b!r}")


def shas(run):
    out = {}
    for p in sorted(run.rglob("*.safetensors")):
        out[str(p.relative_to(run))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main():
    a, b = map(pathlib.Path, sys.argv[1:3])
    out = []
    ra, rb = (json.loads((r / "report.json").read_text()) for r in (a, b))
    diff(ra, rb, (), out)
    sa, sb = shas(a), shas(b)
    for k in sorted(set(sa) | set(sb)):
        if sa.get(k) != sb.get(k):
            out.append(f"{k}: sha256 {sa.get(k, 'missing')[:16]} vs {sb.get(k, 'missing')[:16]}")
    for line in out:
        print(line)
    print(f"{len(out)} differences; {len(sa)} checkpoint files compared by sha256 ({sum(1 for k in sa if sa[k] == sb.get(k))} identical)")
    sys.exit(1 if out else 0)


if __name__ == "__main__":
    main()
