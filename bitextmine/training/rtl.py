"""The Representation Translation Learning (RTL) head, which exists only during training.

The head is K transformer layers initialised from the encoder's last K layers, with its own
embedding layer (position and token-type embeddings and LayerNorm copied from the encoder, and
one learned [MASK] vector initialised from the encoder's [MASK] embedding — the only word
embedding the head ever looks up, so the rest of the vocabulary matrix is not copied). Its input
is the non-English sentence's last-layer token states followed by one [MASK] vector per position
of the English target sequence; position embeddings run over the doubled length. Attention to both
[CLS] positions is masked (so the head cannot read the pooled sentence vector directly) as is
padding; every English content token is predicted at once (mask ratio 1.0), never [CLS], [SEP],
the prefix or padding. Direction xx -> en, the paper's best.

The prediction layer (dense + activation + LayerNorm + decoder, the MLM head layout) can be
restricted to the token ids that occur on the English side of the training data: the decoder
then has one row per such id (``vocab_ids``), and ``to_shrunk`` maps full-vocabulary ids to rows.
When the model folder carries MLM-head weights (xlm-roberta-base, bert-base-multilingual-cased)
they initialise it; otherwise (the packaged E5) the dense layer starts fresh and the decoder rows
start as the encoder's word embeddings of those ids, as in a tied MLM head.
"""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import torch
from torch import nn

from bitextmine.errors import ConfigError, ModelError
from bitextmine.models.arch import position_offset


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"the RTL head needs a BERT-like encoder (encoder.layer); {type(encoder).__name__} has none "
                          "(train TR only with objective.rtl_weight = 0)")
    return layers


def build_rtl_inputs(src_states: torch.Tensor, src_mask: torch.Tensor, mask_vector: torch.Tensor,
                     tgt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head input embeddings (b, Ls+Lt, h) and attention mask (b, Ls+Lt).

    src_states (b, Ls, h): the source sentence's last-layer states, [CLS] first; src_mask (b, Ls);
    mask_vector (h,); tgt_mask (b, Lt): 1 on the positions of the target sequence ([CLS] first).
    Both [CLS] positions (0 and Ls) are masked out of attention.
    """
    b, ls, h = src_states.shape
    lt = tgt_mask.shape[1]
    masks = mask_vector.to(src_states.dtype).expand(b, lt, h)
    embeds = torch.cat([src_states, masks], dim=1)
    attn = torch.cat([src_mask, tgt_mask], dim=1).clone()
    attn[:, 0] = 0
    attn[:, ls] = 0
    return embeds, attn


def rtl_targets(tgt_ids: torch.Tensor, label_mask: torch.Tensor, to_shrunk: torch.Tensor) -> torch.Tensor:
    """(b, Lt) labels: the prediction-layer row of each English content token, -100 elsewhere (or if unknown)."""
    labels = torch.full_like(tgt_ids, -100)
    rows = to_shrunk[tgt_ids[label_mask]]
    labels[label_mask] = torch.where(rows >= 0, rows, torch.full_like(rows, -100))
    return labels


def load_mlm_head(folder: Path) -> dict[str, torch.Tensor] | None:
    """MLM-head transform weights from a model folder, if it has them: dense.weight/bias, ln.weight/bias, bias."""
    names = {
        "dense.weight": ("lm_head.dense.weight", "cls.predictions.transform.dense.weight"),
        "dense.bias": ("lm_head.dense.bias", "cls.predictions.transform.dense.bias"),
        "ln.weight": ("lm_head.layer_norm.weight", "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.gamma"),
        "ln.bias": ("lm_head.layer_norm.bias", "cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.beta"),
        "bias": ("lm_head.bias", "cls.predictions.bias"),
    }
    wanted = {k for ks in names.values() for k in ks}
    found: dict[str, torch.Tensor] = {}
    for p in sorted(Path(folder).glob("*.safetensors")):
        from safetensors import safe_open

        with safe_open(str(p), "pt") as f:
            for k in f.keys():
                if k in wanted:
                    found[k] = f.get_tensor(k)
    if not found:
        for p in sorted(Path(folder).glob("pytorch_model*.bin")):
            try:  # tensors only: a pickle that names anything else is refused, never run
                state = torch.load(p, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ModelError(f"{p}: cannot read its MLM-head weights safely ({first[:160]})") from None
            found.update({k: v for k, v in state.items() if k in wanted})
    out = {}
    for ours, theirs in names.items():
        for k in theirs:
            if k in found:
                out[ours] = found[k]
                break
    return out if len(out) == len(names) else None


def _instantiate(cls: type, config) -> nn.Module:
    try:
        model = cls(config, add_pooling_layer=False)
    except TypeError:
        model = cls(config)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


class RTLHead(nn.Module):
    """K transformer layers + MLM-style prediction layer over a (possibly shrunk) vocabulary."""

    def __init__(self, encoder: nn.Module, layers: int, mask_token_id: int, vocab_ids: torch.Tensor | None = None,
                 mlm_head: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        enc_layers = encoder_layers(encoder)
        n = len(enc_layers)
        if not 1 <= layers <= n:
            raise ConfigError(f"objective.rtl_layers = {layers}, but the encoder has {n} layers")
        word = encoder.get_input_embeddings().weight
        full_vocab, hidden = word.shape
        cfg = copy.deepcopy(encoder.config)
        self.offset = position_offset(cfg)
        cfg.num_hidden_layers = layers
        cfg.vocab_size = 1  # the head's only word embedding is [MASK]: row 0
        cfg.pad_token_id = 0
        self.body = _instantiate(type(encoder), cfg)
        emb, src_emb = self.body.embeddings, encoder.embeddings
        for name in ("position_embeddings", "token_type_embeddings", "LayerNorm"):
            if hasattr(src_emb, name):
                getattr(emb, name).load_state_dict(getattr(src_emb, name).state_dict())
        with torch.no_grad():
            emb.word_embeddings.weight[0].copy_(word[mask_token_id])
        for i in range(layers):
            self.body.encoder.layer[i].load_state_dict(enc_layers[n - layers + i].state_dict())
        self.body.train(encoder.training)

        if vocab_ids is None:
            vocab_ids = torch.arange(full_vocab)
        vocab_ids = torch.as_tensor(vocab_ids, dtype=torch.long).unique(sorted=True)
        if vocab_ids.numel() == 0 or int(vocab_ids.max()) >= full_vocab or int(vocab_ids.min()) < 0:
            raise ConfigError("RTL vocabulary: token ids out of the model's vocabulary")
        to_shrunk = torch.full((full_vocab,), -1, dtype=torch.long)
        to_shrunk[vocab_ids] = torch.arange(vocab_ids.numel())
        self.register_buffer("vocab_ids", vocab_ids)
        self.register_buffer("to_shrunk", to_shrunk)

        eps = float(getattr(cfg, "layer_norm_eps", 1e-12))
        act = str(getattr(cfg, "hidden_act", "gelu"))
        std = float(getattr(cfg, "initializer_range", 0.02))
        self.dense = nn.Linear(hidden, hidden)
        with torch.no_grad():  # initialised before the decoder exists, so it does not depend on the vocabulary size
            self.dense.weight.normal_(0.0, std)
            self.dense.bias.zero_()
        self.act = nn.GELU(approximate="tanh") if "new" in act or "tanh" in act else nn.GELU()
        self.ln = nn.LayerNorm(hidden, eps=eps)
        self.decoder = nn.Linear(hidden, vocab_ids.numel())
        with torch.no_grad():
            self.decoder.weight.copy_(word[vocab_ids])  # a tied MLM head's decoder is the word-embedding matrix
            self.decoder.bias.zero_()
            if mlm_head is not None:
                self.dense.weight.copy_(mlm_head["dense.weight"])
                self.dense.bias.copy_(mlm_head["dense.bias"])
                self.ln.weight.copy_(mlm_head["ln.weight"])
                self.ln.bias.copy_(mlm_head["ln.bias"])
                self.decoder.bias.copy_(mlm_head["bias"][vocab_ids])

    @property
    def mask_vector(self) -> torch.Tensor:
        return self.body.embeddings.word_embeddings.weight[0]

    def to_full(self, rows: torch.Tensor) -> torch.Tensor:
        """Prediction-layer rows -> full-vocabulary token ids."""
        return self.vocab_ids[rows]

    def forward(self, src_states: torch.Tensor, src_mask: torch.Tensor, tgt_ids: torch.Tensor, tgt_mask: torch.Tensor,
                label_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (t, V_rtl), targets (t,)) for the t English content tokens to predict."""
        embeds, attn = build_rtl_inputs(src_states, src_mask, self.mask_vector, tgt_mask)
        b, length = attn.shape
        pos = (torch.arange(length, device=attn.device) + self.offset).expand(b, length)
        out = self.body(inputs_embeds=embeds, attention_mask=attn, position_ids=pos,
                        token_type_ids=torch.zeros_like(attn)).last_hidden_state
        labels = rtl_targets(tgt_ids, label_mask, self.to_shrunk)
        tgt_out = out[:, src_states.shape[1] :]
        keep = labels >= 0
        hidden = tgt_out[keep]
        logits = self.decoder(self.ln(self.act(self.dense(hidden))))
        return logits, labels[keep]
