"""Benchmarks: BUCC 2018 bitext mining F1 (:mod:`.bucc`) and Tatoeba retrieval accuracy (:mod:`.tatoeba`).

Library functions only; ``bitextmine bench ...`` (:mod:`bitextmine.cli_bench`) prints and plots.
"""
