"""Shared by the BUCC tests (tests/test_bench_bucc*.py): an independent, loop-by-loop port of LASER's
``tasks/bucc/bucc.py`` to compare against, and synthetic BUCC splits as folders or archives."""
from __future__ import annotations

import io
import random
import tarfile

from conftest import make_sentences


def laser_reference(src_ids, src_texts, tgt_ids, tgt_texts, candidate_lines, gold_lines):
    """LASER's procedure, loop by loop over text lines: sentence→id maps without repeated sentences,
    candidate lines 'score<TAB>src<TAB>tgt', the F1 sweep, extraction at the threshold.
    One deviation, at an edge LASER does not handle: when the best cut is the last candidate
    (LASER raises IndexError), the threshold is that candidate's score."""
    maps = []
    for ids, texts in ((src_ids, src_texts), (tgt_ids, tgt_texts)):
        sent2id, repeated = {}, set()
        for i, sent in zip(ids, texts):
            sent = sent.strip()
            if sent in sent2id:
                repeated.add(sent)
            else:
                sent2id[sent] = i
        for sent in repeated:
            del sent2id[sent]
        maps.append(sent2id)
    src_sent2id, trg_sent2id = maps
    candidate2score = {}
    for line in candidate_lines:
        score, src, trg = line.split("\t")
        score = float(score)
        src, trg = src.strip(), trg.strip()
        if src in src_sent2id and trg in trg_sent2id:
            key = (src_sent2id[src], trg_sent2id[trg])
            candidate2score[key] = max(score, candidate2score.get(key, score))
    gold = {line.strip() for line in gold_lines}
    items = sorted(candidate2score.items(), key=lambda x: -x[1])
    nextract = ncorrect = 0
    threshold, best_f1 = 0, 0
    for i in range(len(items)):
        nextract += 1
        if "\t".join(items[i][0]) in gold:
            ncorrect += 1
        if ncorrect > 0:
            precision = ncorrect / nextract
            recall = ncorrect / len(gold)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                threshold = (items[i][1] + items[i + 1][1]) / 2 if i + 1 < len(items) else items[i][1]
    bitexts = ["\t".join(k) for k, s in candidate2score.items() if s >= threshold]
    ncorrect = len(gold.intersection(bitexts))
    if ncorrect > 0:
        precision = ncorrect / len(bitexts)
        recall = ncorrect / len(gold)
        f1 = 2 * precision * recall / (precision + recall)
    else:
        precision = recall = f1 = 0
    return threshold, precision, recall, f1


def make_split(lang: str, split: str, seed: int, n_gold: int = 12, n_noise: int = 20, gold: bool = True):
    """Texts for one split: ``n_gold`` sentences on both sides (identical text: the tiny model scores them
    highest), noise on each side, one sentence repeated on the source side (LASER drops it)."""
    common = make_sentences(n_gold, seed=seed)
    noise = make_sentences(2 * n_noise + 1, seed=seed + 1000)
    noise = [s for s in noise if s not in common]
    src = common + noise[:n_noise] + [noise[0]]  # noise[0] twice on the source side
    tgt = list(reversed(common)) + noise[n_noise : 2 * n_noise]
    rng = random.Random(seed)
    order_s, order_t = list(range(len(src))), list(range(len(tgt)))
    rng.shuffle(order_s)
    rng.shuffle(order_t)
    files = {}
    files[f"{lang}-en.{split}.{lang}"] = "".join(f"{lang}-{split[:2]}{k:06d}\t{src[i]}\n" for k, i in enumerate(order_s))
    files[f"{lang}-en.{split}.en"] = "".join(f"en-{split[:2]}{k:06d}\t{tgt[i]}\n" for k, i in enumerate(order_t))
    sid = {src[i]: f"{lang}-{split[:2]}{k:06d}" for k, i in enumerate(order_s)}
    tid = {tgt[i]: f"en-{split[:2]}{k:06d}" for k, i in enumerate(order_t)}
    pairs = [(sid[s], tid[s]) for s in common]
    if gold:
        files[f"{lang}-en.{split}.gold"] = "".join(f"{a}\t{b}\n" for a, b in pairs)
    return files, pairs


def write_files(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def write_archive(path, files, pair):
    with tarfile.open(path, "w:bz2") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"bucc2018/{pair}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_bucc_data(tmp_path):
    """de-en in a per-pair folder (sample + training with gold), fr-en files directly in the root (sample).

    Returns the folder and the gold pairs of de-en training."""
    data = tmp_path / "bucc"
    de_s, _ = make_split("de", "sample", 1)
    de_t, de_t_gold = make_split("de", "training", 2, n_gold=15, n_noise=30)
    write_files(data / "de-en", {**de_s, **de_t})
    fr_s, _ = make_split("fr", "sample", 3)
    write_files(data, fr_s)
    (data / "README.md").write_text("not data\n")
    return data, de_t_gold
