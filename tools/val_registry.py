#!/usr/bin/env python3
"""A registry of the val split's arithmetic, spelling/counting and refusal questions, for choosing on val.

The bundled registry (evals/) holds the test split, which is for reported figures only. This
writes the val split that `chatforge sft` left in R/sft_data/val.jsonl as registry samples,
beside copies of evals/{arithmetic,spelling,refusal}.yaml, so that

    python3 tools/val_registry.py R /tmp/val-registry
    chatforge eval --run R --stage sft --registry /tmp/val-registry --eval arithmetic_tools --eval spelling_tools

scores a model on val (with the built-in tools, and without: `--eval arithmetic --eval spelling`).
The figures go into R's report like any eval's, so run it on a copy of the run folder.

    python3 tools/val_registry.py R /tmp/rl-registry --pool rl --n 200

writes instead the first 200 questions per family of the RL prompt pool (R/sft_data/rl.jsonl):
conversations SFT never saw, in the train split's phrasings, for an n five times val's 40. They
measure fit, not generalisation: most share their problem or word with an SFT demonstration
(`chatforge eval` drops those, 187 of 200 arithmetic questions on the speedrun's suite, unless
R/sft_data is moved away first). The val split keeps the held-out phrasings and problems.
Either way, the chooser never reads the test split.
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(run, out, pool="val", n=None):
    src = os.path.join(run, "sft_data", f"{pool}.jsonl")
    if not os.path.isfile(src):
        sys.exit(f"{src} does not exist: run `chatforge sft --run {run}` first (it writes the task suite)")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "data"))
    for f in ["arithmetic.yaml", "spelling.yaml", "refusal.yaml"]:
        shutil.copy(os.path.join(HERE, "..", "evals", f), os.path.join(out, f))
    rows = {"arithmetic": [], "spelling": [], "refusal": []}
    with open(src) as f:
        for line in f:
            task = json.loads(line)
            meta = task["meta"]
            if meta["family"] not in rows or (n is not None and len(rows[meta["family"]]) >= n):
                continue
            messages = task["messages"]
            last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
            rows[meta["family"]].append(
                {
                    "input": messages[: last_user + 1],
                    "ideal": messages[-1]["content"],
                    "id": meta["id"],
                    "check": meta["check"],
                    "group": meta["family"],
                    "kind": meta["kind"],
                    "keys": meta["keys"],
                }
            )
    for family, samples in rows.items():
        with open(os.path.join(out, "data", f"{family}.jsonl"), "w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
        print(f"{family}: {len(samples)} {pool} samples")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="a registry of the val split (or the RL pool) for choosing on val")
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--pool", choices=["val", "rl"], default="val")
    ap.add_argument("--n", type=int, default=None, help="at most this many questions per family")
    a = ap.parse_args()
    main(a.run, a.out, a.pool, a.n)
