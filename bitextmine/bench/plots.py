"""PNG plots of benchmark results (matplotlib, Agg backend: no display needed).

A leaf: the benchmarks import this module, never the reverse. What a plot reads of a result is
spelled out below as a protocol (:class:`SweepCurve`, :class:`Threshold`, :class:`LangAccuracy`),
which the benchmarks' result types satisfy as they are.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from bitextmine import fs


class SweepCurve(Protocol):
    """Precision/recall/F1 down the ranked candidates (:class:`bitextmine.bench.bucc.Sweep`)."""

    @property
    def score(self) -> np.ndarray: ...  # (n,) descending
    @property
    def is_gold(self) -> np.ndarray: ...  # (n,) bool
    @property
    def precision(self) -> np.ndarray: ...
    @property
    def recall(self) -> np.ndarray: ...
    @property
    def f1(self) -> np.ndarray: ...
    @property
    def gold(self) -> int: ...  # size of the gold set


class Threshold(Protocol):
    """A threshold and its scores (:class:`bitextmine.bench.bucc.ThresholdChoice`)."""

    @property
    def threshold(self) -> float: ...
    @property
    def precision(self) -> float: ...
    @property
    def recall(self) -> float: ...
    @property
    def f1(self) -> float: ...


class LangAccuracy(Protocol):
    """One language's accuracies, 0..1 (:class:`bitextmine.bench.tatoeba.LangResult`)."""

    @property
    def lang(self) -> str: ...
    @property
    def xx2eng(self) -> float: ...
    @property
    def eng2xx(self) -> float: ...
    @property
    def mean(self) -> float: ...

COLORS = {"precision": "#1f77b4", "recall": "#ff7f0e", "f1": "#2ca02c", "gold": "#2ca02c", "other": "#7f7f7f",
          "applied": "#d62728", "best": "#9467bd", "fwd": "#1f77b4", "bwd": "#ff7f0e"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fs.atomic_writer(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_bucc_split(
    sw: SweepCurve,
    path: str | Path,
    *,
    applied: float,
    tuned_on: str,
    best: Threshold,
    title: str,
    margin: str = "ratio",
) -> Path:
    """Two panels: precision/recall/F1 against the threshold, and the score histogram of gold vs other candidates.

    ``applied`` is the threshold tuned on ``tuned_on`` (a red dashed line); ``best`` is the best
    threshold on this split itself (a purple dotted line, drawn when it differs).
    """
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.25, 1]})
    score = np.asarray(sw.score)
    n = len(score)
    if n == 0:
        ax.text(0.5, 0.5, "no candidates", ha="center", va="center", transform=ax.transAxes)
        bx.set_axis_off()
        fig.suptitle(title)
        out = _save(fig, Path(path))
        plt.close(fig)
        return out

    # left: metrics as a function of the threshold (extract every candidate scoring >= x)
    top = min(n, max(4 * sw.gold, 50))  # the interesting part of the curve: a few times the gold size
    lo, hi = float(score[top - 1]), float(score[0])
    for t in (applied, best.threshold):
        if math.isfinite(t):
            lo, hi = min(lo, t), max(hi, t)
    pad = 0.04 * (hi - lo or 1.0)
    ax.plot(score, 100 * sw.precision, color=COLORS["precision"], lw=1.8, label="precision", drawstyle="steps-post")
    ax.plot(score, 100 * sw.recall, color=COLORS["recall"], lw=1.8, label="recall", drawstyle="steps-post")
    ax.plot(score, 100 * sw.f1, color=COLORS["f1"], lw=2.4, label="F1", drawstyle="steps-post")
    ax.set_xlim(hi + pad, lo - pad)  # high thresholds (few pairs) on the left, as the sweep goes
    ax.set_ylim(0, 102)
    ax.set_xlabel(f"threshold on the {margin} margin score (pairs scoring at least it are extracted)")
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
    if math.isfinite(applied):
        i = int(np.searchsorted(-score, -applied, side="right")) - 1  # last candidate >= applied
        f1_at = 100 * sw.f1[i] if i >= 0 else 0.0
        what = "tuned on this split" if best is not None and math.isclose(applied, best.threshold) else f"tuned on {tuned_on}"
        ax.axvline(applied, color=COLORS["applied"], ls="--", lw=1.6,
                   label=f"threshold {applied:.4f} ({what}): F1 {f1_at:.1f}")
    if math.isfinite(best.threshold) and not math.isclose(best.threshold, applied):
        ax.axvline(best.threshold, color=COLORS["best"], ls=":", lw=1.8,
                   label=f"best threshold here {best.threshold:.4f}: F1 {100 * best.f1:.1f}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    ax.set_title(f"P {100 * best.precision:.1f} / R {100 * best.recall:.1f} / F1 {100 * best.f1:.1f} at the best threshold; "
                 f"{sw.gold:,} gold pairs, {n:,} candidates", fontsize=10)

    # right: where gold and other candidates score
    g = score[sw.is_gold]
    o = score[~sw.is_gold]
    bins = np.linspace(float(score.min()), float(score.max()), 60)
    if bins[0] == bins[-1]:
        bins = np.linspace(bins[0] - 0.5, bins[0] + 0.5, 3)
    counts_o, *_ = bx.hist(o, bins=bins, color=COLORS["other"], alpha=0.55, label=f"not in gold ({len(o):,})")
    counts_g, *_ = bx.hist(g, bins=bins, color=COLORS["gold"], alpha=0.75, label=f"gold ({len(g):,})")
    log = max(np.max(counts_o, initial=0), np.max(counts_g, initial=0)) > 50  # a few gold pairs among thousands of others
    if log:
        bx.set_yscale("log")
    if math.isfinite(applied):
        bx.axvline(applied, color=COLORS["applied"], ls="--", lw=1.6, label="threshold applied")
    if math.isfinite(best.threshold) and not math.isclose(best.threshold, applied):
        bx.axvline(best.threshold, color=COLORS["best"], ls=":", lw=1.8, label="best threshold here")
    bx.set_xlabel(f"{margin} margin score of the candidate pair")
    bx.set_ylabel("candidates (log scale)" if log else "candidates")
    bx.set_title("score histogram: gold vs other candidates", fontsize=10)
    bx.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    bx.grid(alpha=0.3)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_tatoeba(results: Sequence[LangAccuracy], path: str | Path, *, title: str = "Tatoeba retrieval accuracy",
                 averages: dict[str, dict] | None = None) -> Path:
    """Horizontal bars per language, both directions, sorted by their mean; averages as vertical lines."""
    plt = _pyplot()
    rs = sorted(results, key=lambda r: (r.mean, r.lang))
    n = len(rs)
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.32 * n + 1.5)))
    y = np.arange(n)
    h = 0.4
    ax.barh(y + h / 2, [100 * r.xx2eng for r in rs], height=h, color=COLORS["fwd"], label="xx → eng")
    ax.barh(y - h / 2, [100 * r.eng2xx for r in rs], height=h, color=COLORS["bwd"], label="eng → xx")
    ax.set_yticks(y, [f"{r.lang} ({100 * r.mean:.1f})" for r in rs], fontsize=9)
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("accuracy (%), nearest neighbour by cosine")
    styles = ["--", ":", "-."]
    for (name, avg), ls in zip((averages or {}).items(), styles * 3):
        ax.axvline(100 * avg["mean"], color="black", ls=ls, lw=1.2, label=f"{name} mean {100 * avg['mean']:.1f} ({avg['languages']} langs)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08 if n > 20 else -0.12), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
