"""BUCC 2018 shared task: mine parallel sentences from comparable corpora, score against gold.

The protocol follows LASER's ``tasks/bucc`` (Artetxe & Schwenk, 2019) and XTREME's
``bucc_optimize``:

1. embed both sides of a split (``xx-en.<split>.{xx,en}``, lines ``id<TAB>sentence``);
2. mine candidates with the ratio margin, k=4, strategy ``max`` over unique sentences (LASER's
   ``--unify``);
3. map each candidate's texts back to ids; a text that occurs more than once on a side maps to no
   id and its candidates are dropped; a repeated (src_id, tgt_id) pair keeps its highest score;
4. sweep the candidates from the best score down and keep the cut with the best F1; the threshold
   is the midpoint between the score of the last candidate kept and the next one's;
5. precision = correct / extracted, recall = correct / gold pairs (gold pairs that can never be
   extracted, e.g. for repeated sentences, still count).

Two numbers come out: the threshold tuned on one split and applied to another (the honest one),
and the best-threshold F1 of a split tuned on itself (the number most papers print). A split
without gold (the official test) gets a file of mined ``xxid<TAB>enid`` pairs instead.

The package follows that order, one way: :mod:`.data` (the files and archives), :mod:`.score`
(ids, sweep, threshold; no files), :mod:`.run` (the benchmark, which uses both and
:mod:`bitextmine.bench.plots`). Everything is a library function: nothing prints, errors are
:class:`bitextmine.errors.InputError`.
"""
from bitextmine.bench.bucc.data import (
    SPLITS,
    TARGET,
    BuccSplit,
    Pair,
    extract_archive,
    find_bucc,
    ids_present,
    read_gold,
    write_pairs_file,
)
from bitextmine.bench.bucc.run import (
    BuccOptions,
    Embedder,
    GoldCheck,
    Mined,
    PairResult,
    SplitResult,
    check_gold,
    choose_splits,
    mine_split,
    run_bucc,
    tuned_threshold,
)
from bitextmine.bench.bucc.score import (
    Evaluation,
    IdPairs,
    Sweep,
    ThresholdChoice,
    candidates_to_ids,
    evaluate_at,
    extract,
    optimize_threshold,
    sweep,
    unique_sentence_ids,
)

__all__ = [
    "SPLITS",
    "TARGET",
    "BuccOptions",
    "BuccSplit",
    "Embedder",
    "Evaluation",
    "GoldCheck",
    "IdPairs",
    "Mined",
    "Pair",
    "PairResult",
    "SplitResult",
    "Sweep",
    "ThresholdChoice",
    "candidates_to_ids",
    "check_gold",
    "choose_splits",
    "evaluate_at",
    "extract",
    "extract_archive",
    "find_bucc",
    "ids_present",
    "mine_split",
    "optimize_threshold",
    "read_gold",
    "run_bucc",
    "sweep",
    "tuned_threshold",
    "unique_sentence_ids",
    "write_pairs_file",
]
