#!/usr/bin/env python3
"""A registry of the val split's arithmetic, spelling/counting and refusal questions, for choosing on val.

The bundled registry (evals/) holds the test split, which is for reported figures only. This
writes the val split that `chatforge sft` left in R/sft_data/val.jsonl as registry samples,
beside copies of evals/{arithmetic,spelling,refusal}.yaml, so that

    python3 tools/val_registry.py R /tmp/val-registry
    chatforge eval --run R --stage sft --registry /tmp/val-registry --eval arithmetic_tools --eval spelling_tools

scores a model on val (with the built-in tools, and without: `--eval arithmetic --eval spelling`).
The figures go into R's report like any eval's, so run it on a copy of the run folder.
"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(run, out):
    if not os.path.isfile(os.path.join(run, "sft_data", "val.jsonl")):
        sys.exit(f"{os.path.join(run, 'sft_data', 'val.jsonl')} does not exist: run `chatforge sft --run {run}` first (it writes the task suite)")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "data"))
    for f in ["arithmetic.yaml", "spelling.yaml", "refusal.yaml"]:
        shutil.copy(os.path.join(HERE, "..", "evals", f), os.path.join(out, f))
    rows = {"arithmetic": [], "spelling": [], "refusal": []}
    with open(os.path.join(run, "sft_data", "val.jsonl")) as f:
        for line in f:
            task = json.loads(line)
            meta = task["meta"]
            if meta["family"] not in rows:
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
        print(f"{family}: {len(samples)} val samples")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: val_registry.py RUN_DIR OUT_DIR")
    main(sys.argv[1], sys.argv[2])
