"""DAP training pieces on hand-made tensors and a tiny model: losses, the RTL head, config, data, sampling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bitextmine.errors import ConfigError
from bitextmine.training.config import load_config
from bitextmine.training.data.batches import Sampler, make_batch
from bitextmine.training.data.pairs import filter_reason, find_train_files, read_tsv
from bitextmine.training.data.tokens import LangData, PreparedData, Ragged, token_layout
from bitextmine.training.loop import enable_checkpointing
from bitextmine.training.losses import ranking_loss, rtl_loss_sum, translation_ranking_loss
from bitextmine.training.model import DualEncoder
from bitextmine.training.rtl import RTLHead, build_rtl_inputs, rtl_targets


# ----------------------------------------------------------------------------- TR loss


def _hand_ce(q, c, pos, t, margin=0.0, skip=()):
    """-log softmax by explicit loops over python floats."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b))

    logits = []
    for j, cj in enumerate(c):
        if j in skip and j != pos:
            continue
        s = cos(q, cj) - (margin if j == pos else 0.0)
        logits.append((j, s / t))
    m = max(v for _, v in logits)
    log_z = m + math.log(sum(math.exp(v - m) for _, v in logits))
    return log_z - dict(logits)[pos]


def test_tr_loss_equals_hand_computation():
    x = [[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [0.0, 0.3, 1.0]]
    y = [[0.9, 0.1, 0.4], [0.0, 1.0, 0.2], [0.5, 0.5, 0.5]]
    xs, ys = torch.tensor(x), torch.tensor(y)
    t = 0.05
    fwd = sum(_hand_ce(x[i], y, i, t) for i in range(3)) / 3
    bwd = sum(_hand_ce(y[i], x, i, t) for i in range(3)) / 3
    got = translation_ranking_loss(xs, ys, temperature=t)
    assert got.item() == pytest.approx(fwd, rel=1e-5)
    got_both = translation_ranking_loss(xs, ys, temperature=t, direction="both")
    assert got_both.item() == pytest.approx((fwd + bwd) / 2, rel=1e-5)
    # additive margin lowers the positive's cosine
    fwd_m = sum(_hand_ce(x[i], y, i, t, margin=0.3) for i in range(3)) / 3
    assert translation_ranking_loss(xs, ys, temperature=t, margin=0.3).item() == pytest.approx(fwd_m, rel=1e-5)
    assert fwd_m > fwd
    # scale does not matter (cosine)
    assert translation_ranking_loss(xs * 7, ys * 0.1, temperature=t).item() == pytest.approx(fwd, rel=1e-5)


def test_tr_loss_global_candidates_offset_and_duplicate_keys():
    torch.manual_seed(0)
    all_x, all_y = torch.randn(6, 4), torch.randn(6, 4)
    # local rows 2..3 of a global batch of 6: same value as the rows of the full loss
    full_rows = [_hand_ce(all_x[i].tolist(), all_y.tolist(), i, 0.1) for i in range(6)]
    local = ranking_loss(all_x[2:4], all_y, temperature=0.1, offset=2)
    assert local.item() == pytest.approx((full_rows[2] + full_rows[3]) / 2, rel=1e-5)
    # candidate 5 is another copy of pair 2's English sentence: not a negative for row 2
    keys = torch.tensor([10, 11, 12, 13, 14, 12])
    got = translation_ranking_loss(all_x[2:4], all_y[2:4], temperature=0.1, all_src=all_x, all_tgt=all_y, offset=2,
                                   tgt_keys=keys[2:4], all_tgt_keys=keys)
    want = (_hand_ce(all_x[2].tolist(), all_y.tolist(), 2, 0.1, skip={5}) + full_rows[3]) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_rtl_loss_sum_is_token_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2])
    s, n = rtl_loss_sum(logits, targets)
    want = -(math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))) + math.log(1 / (2 + math.e)))
    assert n == 2 and s.item() == pytest.approx(want, rel=1e-6)
    z, n0 = rtl_loss_sum(logits[:0], targets[:0])
    assert n0 == 0 and z.item() == 0.0


# ----------------------------------------------------------------------------- RTL inputs, labels, head


def test_rtl_inputs_and_masks_on_hand_made_batch():
    h = 3
    src = torch.arange(2 * 4 * h, dtype=torch.float32).reshape(2, 4, h)  # Ls = 4, [CLS] first
    src_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    tgt_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])  # Lt = 5
    mask_vec = torch.tensor([7.0, 8.0, 9.0])
    emb, attn = build_rtl_inputs(src, src_mask, mask_vec, tgt_mask)
    assert emb.shape == (2, 9, h)
    assert torch.equal(emb[:, :4], src)  # the source states, unchanged
    assert torch.equal(emb[:, 4:], mask_vec.expand(2, 5, h))  # one [MASK] vector per target position
    assert attn.tolist() == [[0, 1, 1, 1, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 1, 1, 1, 1]]  # both [CLS] blocked, padding blocked
    assert src_mask[0, 0] == 1  # inputs not modified
    # labels: content tokens only, mapped to prediction rows; unknown ids ignored
    tgt_ids = torch.tensor([[0, 40, 2, 1, 1], [0, 41, 40, 99, 2]])  # <s> ... </s> <pad>
    label_mask = torch.tensor([[False, True, False, False, False], [False, True, True, True, False]])
    to_shrunk = torch.full((100,), -1)
    to_shrunk[40], to_shrunk[41] = 0, 1
    assert rtl_targets(tgt_ids, label_mask, to_shrunk).tolist() == [[-100, 0, -100, -100, -100], [-100, 1, 0, -100, -100]]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model):
    from bitextmine.models.loader import load_model

    return load_model(str(tiny_model), device="cpu")


def _fresh_encoder(tiny_lm):
    import copy

    return copy.deepcopy(tiny_lm.model)


def test_head_initialised_from_last_k_layers(tiny_lm):
    enc = _fresh_encoder(tiny_lm)
    word = enc.get_input_embeddings().weight
    mask_id = tiny_lm.tokenizer.mask_token_id
    for k in (1, 2):
        head = RTLHead(enc, k, mask_id, torch.tensor([5, 9, 30]))
        n = len(enc.encoder.layer)
        assert len(head.body.encoder.layer) == k
        for i in range(k):
            a, b = head.body.encoder.layer[i].state_dict(), enc.encoder.layer[n - k + i].state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
            assert head.body.encoder.layer[i].attention.self.query.weight.data_ptr() != enc.encoder.layer[n - k + i].attention.self.query.weight.data_ptr()
        assert torch.equal(head.body.embeddings.position_embeddings.weight, enc.embeddings.position_embeddings.weight)
        assert torch.equal(head.body.embeddings.LayerNorm.weight, enc.embeddings.LayerNorm.weight)
        assert torch.equal(head.mask_vector, word[mask_id])
        assert head.body.embeddings.word_embeddings.weight.shape[0] == 1  # the vocabulary matrix is not copied
    with pytest.raises(ConfigError):
        RTLHead(enc, 3, mask_id)


def test_shrunk_vocabulary_maps_back(tiny_lm):
    enc = _fresh_encoder(tiny_lm)
    enc.eval()
    word = enc.get_input_embeddings().weight
    ids = torch.tensor([30, 5, 9, 5, 120])
    torch.manual_seed(3)
    small = RTLHead(enc, 2, tiny_lm.tokenizer.mask_token_id, ids).eval()
    torch.manual_seed(3)
    full = RTLHead(enc, 2, tiny_lm.tokenizer.mask_token_id, None).eval()
    assert small.vocab_ids.tolist() == [5, 9, 30, 120]  # sorted, unique
    assert torch.equal(small.to_shrunk[small.vocab_ids], torch.arange(4))
    assert (small.to_shrunk >= 0).sum() == 4
    assert torch.equal(small.to_full(torch.tensor([2, 0])), torch.tensor([30, 5]))
    assert torch.equal(small.decoder.weight, word[small.vocab_ids])  # tied-style init, rows of the kept ids
    # the same hidden states give the full head's logits restricted to the kept columns
    src = torch.randn(2, 4, enc.config.hidden_size)
    src_mask = torch.ones(2, 4, dtype=torch.long)
    tgt = torch.tensor([[0, 9, 30, 2], [0, 120, 5, 2]])
    tmask = torch.ones_like(tgt)
    lmask = torch.tensor([[False, True, True, False], [False, True, True, False]])
    with torch.no_grad():
        ls, ts = small(src, src_mask, tgt, tmask, lmask)
        lf, tf = full(src, src_mask, tgt, tmask, lmask)
    assert torch.allclose(ls, lf[:, small.vocab_ids], atol=1e-5)
    assert torch.equal(small.to_full(ts), tf)  # shrunk targets map back to the full-vocabulary targets
    assert tf.tolist() == [9, 30, 120, 5]


def _toy_batch(tiny_lm):
    tok = tiny_lm.tokenizer
    lay = token_layout(tok, "", 32)
    src_text = ["der baum haus stadt", "le chat maison ville", "das auto buch licht"]
    tgt_text = ["the tree house city", "the cat house city", "the car book light"]
    enc = lambda ts: Ragged.from_lists([tok(t, add_special_tokens=False)["input_ids"] for t in ts])  # noqa: E731
    d = LangData(enc(src_text), enc(tgt_text), enc(tgt_text), [])
    data = PreparedData({"xx": d}, lay, {}, "fp")
    return data, make_batch(data, [(0, 0), (0, 1), (0, 2)])


def test_make_batch_labels_and_masks(tiny_lm):
    data, b = _toy_batch(tiny_lm)
    lay = data.layout
    assert lay.head == (0,) and lay.tail == (2,)
    for row in range(3):
        content = data.langs["xx"].rtl[row].tolist()
        n = len(content)
        assert b.rtl_ids[row, : n + 2].tolist() == [0, *content, 2]
        assert b.rtl_label_mask[row].tolist() == [False] + [True] * n + [False] * (b.rtl_ids.shape[1] - n - 1)
        assert b.rtl_mask[row].sum().item() == n + 2
        assert (b.rtl_ids[row, n + 2 :] == lay.pad_id).all()
    assert b.src_key[0] != b.src_key[1] and b.tgt_key.shape == (3,)


def test_gradients_reach_the_encoder_from_both_losses(tiny_lm):
    data, batch = _toy_batch(tiny_lm)
    for which in ("tr", "rtl"):
        enc = _fresh_encoder(tiny_lm)
        enc.train()
        head = RTLHead(enc, 2, tiny_lm.tokenizer.mask_token_id, torch.from_numpy(data.english_vocab()))
        model = DualEncoder(enc, "mean", pad_id=data.layout.pad_id, head=head)
        out = model(batch)
        loss = translation_ranking_loss(out.src, out.tgt) if which == "tr" else out.rtl_sum / out.rtl_tokens
        loss.backward()
        first = enc.encoder.layer[0].attention.self.query.weight.grad
        assert first is not None and first.abs().sum() > 0, which
        assert enc.embeddings.word_embeddings.weight.grad.abs().sum() > 0, which
        head_grad = head.decoder.weight.grad
        if which == "rtl":
            assert head_grad is not None and head_grad.abs().sum() > 0
            assert head.body.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # the [MASK] vector learns
        else:
            assert head_grad is None


# ----------------------------------------------------------------------------- config


def test_config_from_toml_and_overrides(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[data]\ntrain = ["a-en.tsv"]\n[optim]\nsteps = 10\nlr = 1\n[eval]\nselect_on = "split"\n')
    cfg = load_config(p, ["optim.lr=3e-5", "objective.rtl_weight=0", "model.name=some/folder", "data.languages=['de','fr']"])
    assert cfg.optim.steps == 10 and cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.tr_only and cfg.model.name == "some/folder" and cfg.data.languages == ["de", "fr"]
    again = load_config(None, [f"{k}" for k in []] + ['data.train=["a-en.tsv"]', "optim.steps=10", "optim.lr=3e-5",
                                                       "objective.rtl_weight=0.0", "model.name=some/folder", "data.languages=['de','fr']",
                                                       "eval.select_on=split"])
    assert again.fingerprint() == cfg.fingerprint()
    assert load_config(p, ["log.every=1", "run.output_dir=elsewhere"]).fingerprint() == load_config(p).fingerprint()
    assert load_config(p, ["optim.steps=11"]).fingerprint() != load_config(p).fingerprint()
    # the saved TOML reads back to the same config
    (tmp_path / "s.toml").write_text(cfg.to_toml())
    assert load_config(tmp_path / "s.toml").to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override, msg", [
    ("optim.stepz=3", "unknown key 'stepz'"),
    ("optim.steps=many", "expected an integer"),
    ("objective.direction=sideways", "direction must be forward or both"),
    ("optim.batch_size=10", "divisible"),
    ("eval.select_on=flores", "needs eval.flores_dir"),
    ("nonsense", "expected key=value"),
])
def test_config_errors_are_one_line(tmp_path, override, msg):
    base = ['data.train=["a-en.tsv"]', "eval.select_on=split", "optim.grad_accumulation=4"]
    if override.startswith("eval."):
        base.remove("eval.select_on=split")
    with pytest.raises(ConfigError, match=msg) as e:
        load_config(None, base + [override])
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize("xx, en, xt, et, reason", [
    ("see http://x", "see it", [1] * 6, [2] * 6, "url_or_at"),
    ("mail a@b", "mail", [1] * 6, [2] * 6, "url_or_at"),
    ("a b c", "a b c d e", [1, 2, 3], [4, 5, 6, 7, 8], "too_short"),
    ("x", "y", list(range(10)), list(range(100, 140)), "length_ratio"),  # 40 > max(20, 32)
    ("x", "y", list(range(10)), list(range(100, 130)), None),  # 30 <= 32: kept
    ("x", "y", list(range(70)), list(range(100, 170)), "too_long"),
    ("same text", "same text", [1, 2, 3, 4], [5, 6, 7, 8], "identical"),
    ("x", "y", [1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 8, 9], "overlap"),  # half shared
    ("x", "y", [1, 2, 3, 4, 5, 6], [1, 2, 7, 8, 9, 10], None),
    ("x", "y", [1, 2, 3, 4], [1, 2, 3, 4, 5], None),  # <= 5 tokens: overlap not checked
])
def test_paper_filters(xx, en, xt, et, reason):
    assert filter_reason(xx, en, xt, et) == reason


def test_read_tsv_and_file_discovery(tmp_path):
    (tmp_path / "de-en.tsv").write_bytes("a\tb\nno tab here\n\n\xff\xfe\tbad\nc\td\te\nx\ty\n".encode("utf-8").replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"))
    (tmp_path / "fr-en.tsv").write_text("u\tv\n")
    counts: dict = {}
    assert read_tsv(tmp_path / "de-en.tsv", counts) == [("a", "b"), ("x", "y")]
    assert counts == {"malformed": 2, "blank": 1, "bad_encoding": 1}
    assert list(find_train_files([str(tmp_path / "*-en.tsv")])) == ["de", "fr"]
    assert list(find_train_files([str(tmp_path / "*.tsv")], ["fr"])) == ["fr"]
    from bitextmine.errors import InputError

    with pytest.raises(InputError, match="no training file for es"):
        find_train_files([str(tmp_path / "*.tsv")], ["es"])
    with pytest.raises(InputError, match="matches no file"):
        find_train_files([str(tmp_path / "nothing*.tsv")])
    (tmp_path / "weird.tsv").write_text("a\tb\n")
    with pytest.raises(InputError, match="xx-en.tsv"):
        find_train_files([str(tmp_path / "weird.tsv")])


def test_sampler_is_deterministic_resumable_and_balanced():
    a = Sampler([50, 5, 500], alpha=0.0, seed=1)
    draws = [a.draw(s, 0, 16) for s in range(10)]
    b = Sampler([50, 5, 500], alpha=0.0, seed=1)
    for s in range(4):
        b.draw(s, 0, 16)
    state = b.state_dict()
    c = Sampler([50, 5, 500], alpha=0.0, seed=1)
    c.load_state_dict(state)
    assert [c.draw(s, 0, 16) for s in range(4, 10)] == draws[4:]
    # every pair of a language is seen once per epoch
    seen = [i for d in draws for lang, i in d if lang == 1]
    assert sorted(seen[:5]) == [0, 1, 2, 3, 4]
    # alpha = 0: uniform over languages; alpha = 1: proportional to size
    big = Sampler([100, 900], alpha=1.0, seed=0)
    langs = [lang for s in range(50) for lang, _ in big.draw(s, 0, 100)]
    assert 0.85 < np.mean(langs) < 0.95
    uni = Sampler([100, 900], alpha=0.0, seed=0)
    langs = [lang for s in range(50) for lang, _ in uni.draw(s, 0, 100)]
    assert 0.45 < np.mean(langs) < 0.55
    with pytest.raises(ValueError):
        Sampler([1, 2], 1.0, seed=2).load_state_dict(state)


def test_token_layout_with_e5_style_prefix(tiny_lm):
    tok = tiny_lm.tokenizer
    lay = token_layout(tok, "query: ", 16, ["the cat", "der baum haus"])
    assert lay.prefix_stable
    for s in ("the cat", "der baum haus"):
        assert lay.wrap(tok(s, add_special_tokens=False)["input_ids"]) == tok("query: " + s)["input_ids"]
    assert lay.content_budget == 16 - 2 - len(lay.prefix)
    with pytest.raises(ConfigError):
        token_layout(tok, "query: " * 5, 8)


def test_distributed_gather_with_grad_matches_one_process():
    """Two gloo processes: gathered negatives give each process the gradient of the full-batch loss."""
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8, 5)
    xf, yf = x.clone().requires_grad_(), y.clone().requires_grad_()
    translation_ranking_loss(xf, yf, temperature=0.1, direction="both").backward()
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=_gather_worker, args=(r, 2, port, x, y, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(q.get() for _ in range(2))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for rank in (0, 1):
        gx, gy, total = results[rank]
        assert torch.allclose(gx, xf.grad, atol=1e-6) and torch.allclose(gy, yf.grad, atol=1e-6)
        assert total == pytest.approx(float(x.sum() + y.sum()), abs=1e-4)  # every process saw the whole global batch


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank, world, port, x, y, q):
    import os

    import torch.distributed as dist

    from bitextmine.training.distributed import DistInfo, gather_with_grad

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    info = DistInfo(rank, world)
    b = x.shape[0] // world
    xl = x[rank * b : (rank + 1) * b].clone().requires_grad_()
    yl = y[rank * b : (rank + 1) * b].clone().requires_grad_()
    ax, ay = gather_with_grad(xl, info), gather_with_grad(yl, info)
    loss = translation_ranking_loss(xl, yl, temperature=0.1, direction="both", all_src=ax, all_tgt=ay, offset=rank * b)
    loss.backward()
    # A process's gradient for its rows is the sum of every process's loss gradient (all-gather backward);
    # the full-batch loss is the mean of the per-process losses, and DDP averages over processes: / world.
    gx, gy = torch.zeros_like(x), torch.zeros_like(y)
    gx[rank * b : (rank + 1) * b] = xl.grad / world
    gy[rank * b : (rank + 1) * b] = yl.grad / world
    dist.all_reduce(gx)  # assemble the full-size gradient from both processes' rows
    dist.all_reduce(gy)
    q.put((rank, (gx, gy, float(ax.sum() + ay.sum()))))
    dist.destroy_process_group()


def test_gradient_checkpointing_gives_the_same_gradients(tiny_lm):
    data, batch = _toy_batch(tiny_lm)
    grads = []
    for ckpt in (False, True):
        enc = _fresh_encoder(tiny_lm)
        enc.train()
        if ckpt:
            enable_checkpointing(enc)
        torch.manual_seed(0)
        head = RTLHead(enc, 1, tiny_lm.tokenizer.mask_token_id, torch.from_numpy(data.english_vocab()))
        model = DualEncoder(enc, "mean", pad_id=data.layout.pad_id, head=head)
        torch.manual_seed(1)  # same dropout masks: checkpointing replays the RNG state
        out = model(batch)
        (translation_ranking_loss(out.src, out.tgt) + out.rtl_sum / out.rtl_tokens).backward()
        grads.append(enc.encoder.layer[0].intermediate.dense.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    """torchrun with more processes per node than GPUs: one clear message (NCCL would fail on two ranks per GPU)."""
    import bitextmine.training.distributed as D

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="2 processes per node but 1 GPU"):
        D.setup()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(Exception, match="CUDA is not available"):
        D.setup("cuda")
