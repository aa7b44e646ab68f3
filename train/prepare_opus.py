#!/usr/bin/env python3
"""Download and assemble the DAP paper's OPUS training data as ``<out>/<xx>-en.tsv`` files.

The paper (Li et al., ACL 2023, Sec. 4.1) trains on 36 languages paired with English from six
OPUS corpora: Europarl v8, UNPC v1.0, Tanzil v1, OpenSubtitles v2018, CCMatrix v1 (not for
ar de es fr it nl pt ru zh) and WikiMatrix v1, at most 1M pairs per language, dev = min(10k, 10%).
This script downloads each corpus's Moses zip per language pair from OPUS, cleans the lines the
way the DAP data script does (control characters removed, tabs to spaces, double quotes dropped),
drops empty, identical and '@'/'http' pairs, keeps a seeded uniform sample of at most
``--per-corpus`` pairs per corpus (reservoir sampling: CCMatrix pairs number in the hundreds of
millions), and writes one shuffled TSV per language. ``bitextmine train`` then applies the token-
level filters, duplicate removal, the dev split and the 1M cap, and reports each.

Needs internet and disk (the zips total several tens of GB). Downloads are resumable: a file is
fetched to ``.part`` and renamed when complete, and finished zips are reused.

  python train/prepare_opus.py --out data/opus --cache data/opus-zips
  python train/prepare_opus.py --out data/opus --langs de,fr --corpora Europarl,Tanzil --dry-run
  torchrun --nproc_per_node 8 -m bitextmine train --config train/configs/paper-xlmr.toml
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

LANGS = ("af ar bg bn de el es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr nl pt ru sw ta te th tl tr ur vi zh").split()

# corpus -> (OPUS release path, languages it has with English, among the 36), from the DAP data scripts
CORPORA = {
    "Europarl": ("OPUS-Europarl/v8", "bg de el es et fi fr hu it nl pt"),
    "UNPC": ("OPUS-UNPC/v1.0", "ar es fr ru zh"),
    "Tanzil": ("OPUS-Tanzil/v1", "ar bg bn de es fa fr hi id it ja ko ml nl pt ru sw ta th tr ur zh"),
    "OpenSubtitles": ("OPUS-OpenSubtitles/v2018", "af ar bg bn de el es et eu fa fi fr he hi hu id it ja ka kk ko ml nl pt ru ta te th tl tr ur vi"),
    "CCMatrix": ("OPUS-CCMatrix/v1", "af bg bn el et eu fa fi he hi hu id ja jv ko ml mr sw ta tl tr ur vi"),
    "WikiMatrix": ("OPUS-WikiMatrix/v1", "ar bg bn de el es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr nl pt ru sw ta te tl tr vi zh"),
}
# OPUS names a few languages differently in some corpora
OPUS_CODE = {("OpenSubtitles", "zh"): "zh_cn"}
BASE_URL = "https://object.pouta.csc.fi"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clean(s: str) -> str:
    return _CONTROL.sub("", s).replace("\t", " ").replace('"', "").strip()


def keep(xx: str, en: str) -> bool:
    return bool(xx) and bool(en) and xx != en and "@" not in xx + en and "http" not in xx + en


def url_for(base: str, corpus: str, lang: str) -> tuple[str, str, str]:
    """(zip URL, member name of the xx side, member name of the English side)."""
    release, _ = CORPORA[corpus]
    code = OPUS_CODE.get((corpus, lang), lang)
    a, b = sorted([code, "en"])
    pair = f"{a}-{b}"
    return f"{base}/{release}/moses/{pair}.txt.zip", f"{corpus}.{pair}.{code}", f"{corpus}.{pair}.en"


def download(url: str, dest: Path) -> Path:
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    t0 = time.time()
    with urllib.request.urlopen(url, timeout=120) as r, open(part, "wb") as fh:
        total = int(r.headers.get("Content-Length") or 0)
        done = 0
        while chunk := r.read(1 << 20):
            fh.write(chunk)
            done += len(chunk)
            if total:
                print(f"\r  {dest.name}: {100 * done / total:5.1f}% of {total / 2**20:,.0f} MiB", end="", file=sys.stderr)
    print(f"\r  {dest.name}: {done / 2**20:,.0f} MiB in {time.time() - t0:.0f} s" + " " * 20, file=sys.stderr)
    os.replace(part, dest)
    return dest


def sample_pairs(zip_path: Path, xx_name: str, en_name: str, limit: int, rng: random.Random, stats: dict) -> list[tuple[str, str]]:
    """A uniform sample of at most ``limit`` cleaned, kept pairs (reservoir sampling over the whole corpus)."""
    res: list[tuple[str, str]] = []
    seen = 0
    with zipfile.ZipFile(zip_path) as z:
        names = set(z.namelist())
        for n in (xx_name, en_name):
            if n not in names:
                raise SystemExit(f"{zip_path}: no member {n} (members: {', '.join(sorted(names)[:6])})")
        with z.open(xx_name) as fx, z.open(en_name) as fe:
            for bx, be in zip(io.TextIOWrapper(fx, "utf-8", errors="replace"), io.TextIOWrapper(fe, "utf-8", errors="replace")):
                stats["read"] += 1
                x, e = clean(bx), clean(be)
                if not keep(x, e):
                    stats["dropped"] += 1
                    continue
                seen += 1
                if len(res) < limit:
                    res.append((x, e))
                else:
                    j = rng.randrange(seen)
                    if j < limit:
                        res[j] = (x, e)
    stats["kept"] += len(res)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for <xx>-en.tsv files")
    ap.add_argument("--cache", default=None, help="folder for the downloaded zips (default <out>/zips)")
    ap.add_argument("--langs", default=",".join(LANGS), help="comma-separated language codes (default: the paper's 36)")
    ap.add_argument("--corpora", default=",".join(CORPORA), help=f"comma-separated, from {', '.join(CORPORA)}")
    ap.add_argument("--per-corpus", type=int, default=1_100_000, help="pairs kept per corpus and language (uniform sample)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--base-url", default=BASE_URL, help="OPUS object store (a file:// URL of a mirror works too)")
    ap.add_argument("--dry-run", action="store_true", help="list what would be downloaded and stop")
    args = ap.parse_args(argv)

    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "zips"
    langs = [x for x in args.langs.split(",") if x]
    corpora = [c for c in args.corpora.split(",") if c]
    bad = [c for c in corpora if c not in CORPORA]
    if bad:
        ap.error(f"unknown corpus {bad[0]} (known: {', '.join(CORPORA)})")
    plan = [(lang, c) for lang in langs for c in corpora if lang in CORPORA[c][1].split()]
    if args.dry_run:
        for lang, c in plan:
            print(f"{lang}\t{c}\t{url_for(args.base_url, c, lang)[0]}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for lang in langs:
        target = out / f"{lang}-en.tsv"
        todo = [c for ll, c in plan if ll == lang]
        if not todo:
            print(f"{lang}: none of the chosen corpora has it; skipped", file=sys.stderr)
            continue
        if target.is_file():
            print(f"{lang}: {target} exists; kept", file=sys.stderr)
            continue
        pairs: list[tuple[str, str]] = []
        report[lang] = {}
        for c in todo:
            url, xx_name, en_name = url_for(args.base_url, c, lang)
            print(f"{lang} {c}: {url}", file=sys.stderr)
            z = download(url, cache / c / Path(url).name)
            stats = {"read": 0, "dropped": 0, "kept": 0}
            pairs += sample_pairs(z, xx_name, en_name, args.per_corpus, random.Random(f"{args.seed}-{lang}-{c}"), stats)
            report[lang][c] = stats
        random.Random(f"{args.seed}-{lang}").shuffle(pairs)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for x, e in pairs:
                fh.write(f"{x}\t{e}\n")
        os.replace(tmp, target)
        print(f"{lang}: {len(pairs):,} pairs -> {target}", file=sys.stderr)
    rp = out / "prepare_opus_report.json"
    old = json.loads(rp.read_text()).get("corpora", {}) if rp.is_file() else {}
    rp.write_text(json.dumps({"args": vars(args), "corpora": {**old, **report}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
