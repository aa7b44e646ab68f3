"""Encode throughput with the Ray engine: 1 vs 2 encoder actors on this machine (issue 12).

    .venv/bin/python benchmarks/ray_encode.py [--sentences 3000] [--model default|FOLDER] [--shard-size 500]

Embeds the same synthetic sentences (random words, 6 to 30 a line) with ``encode corpus`` locally
(1 thread) and on a local Ray runtime with 1 and 2 actors of 1 CPU each, default precision.
Reported per run: wall seconds of the encode call (actors' model loading included, since a
user pays it) and sentences/s, plus the embedding-only rate (the summary's seconds exclude
nothing: the startup is measured apart). Writes ``results/ray-encode.json``.
"""
from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from _common import header, write_result


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzäöüéè") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 30))).capitalize() + "." for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=3000)
    ap.add_argument("--model", default="default")
    ap.add_argument("--shard-size", type=int, default=500)
    a = ap.parse_args()

    import ray

    from bitextmine.encode_job import EncodeOptions, encode_files
    from bitextmine.encoder import EncoderOptions
    from bitextmine.ray_engine import RayOptions

    tmp = Path(tempfile.mkdtemp(prefix="ray-encode-"))
    text = tmp / "in.txt"
    text.write_text("\n".join(sentences(a.sentences)) + "\n")
    enc = EncoderOptions(model=a.model, threads=1)
    runs = []
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        for name, engine in (("local, 1 thread", None), ("ray, 1 worker", RayOptions(workers=1)), ("ray, 2 workers", RayOptions(workers=2))):
            out = tmp / name.replace(" ", "").replace(",", "-")
            t0 = time.perf_counter()
            s = encode_files([str(text)], out, enc, EncodeOptions(shard_size=a.shard_size), engine=engine)
            wall = time.perf_counter() - t0
            runs.append({"run": name, "sentences": s.sentences, "wall_s": round(wall, 2), "sentences_per_s": round(s.sentences / wall, 1),
                         "encode_s": round(s.seconds, 2), "encode_sentences_per_s": round(s.sentences_per_second, 1)})
            print(runs[-1], flush=True)
            shutil.rmtree(out)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    path = write_result("ray-encode", {**header(), "model": a.model, "runs": runs})
    print(path)


if __name__ == "__main__":
    main()
