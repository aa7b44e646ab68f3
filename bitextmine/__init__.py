"""bitextmine: find parallel sentences in large monolingual corpora."""
__version__ = "0.1.0"
