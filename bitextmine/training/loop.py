"""The training loop: read top to bottom (one module on purpose: one run's steps in order, in one place).

set up processes -> load the model -> prepare data -> build the dual encoder (+ MLP, + RTL head)
-> AdamW with warm-up and linear decay -> resume from the last checkpoint if there is one ->
for each step: micro-batches forward/backward (TR over the gathered global batch, RTL over tokens),
clip, step, log; evaluate on dev pairs and keep the best; checkpoint -> export the encoder.

Checkpoints (:mod:`~bitextmine.training.checkpoint`) hold the trainable weights, optimizer,
scheduler, grad scaler, every process's RNG states and the sampler's cursors (the data position),
so a run killed at any point and started again with the same command continues exactly where its
last checkpoint left off and ends with the same weights as an uninterrupted run. The CPU thread
count is part of that: it changes the order of floating-point sums in the backward pass, so a
resumed run uses the count its checkpoint recorded (unless ``run.threads`` asks for another).
The run folder (marker, lock, starting over) is :mod:`~bitextmine.training.runfolder`. Dev evaluation is
:mod:`~bitextmine.training.evaluate`. The library reports through a :mod:`bitextmine.events`
listener (main process only; the kinds are listed in :func:`train`); it never prints.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bitextmine import fs
from bitextmine.encoder import resolve_precision
from bitextmine.errors import ConfigError, InputError
from bitextmine.events import Listener, emit
from bitextmine.models.loader import load_model
from bitextmine.models.recipe import Recipe
from bitextmine.training import checkpoint as C
from bitextmine.training import distributed as D
from bitextmine.training import runfolder as RF
from bitextmine.training.config import TrainConfig
from bitextmine.training.data import hardneg as HN
from bitextmine.training.data.batches import Sampler, make_batch
from bitextmine.training.data.miningdev import tuned_threshold
from bitextmine.training.data.prepare import prepare_data
from bitextmine.training.evaluate import dev_sets, evaluate
from bitextmine.training.export import export_encoder
from bitextmine.training.losses import lr_factor, translation_ranking_loss
from bitextmine.training.metrics import MetricsLog, train_record
from bitextmine.training.model import DualEncoder, disable_dropout
from bitextmine.training.rtl import RTLHead, load_mlm_head


def enable_checkpointing(encoder: torch.nn.Module) -> None:
    """Activation (gradient) checkpointing of a transformers encoder, under either method name."""
    kw = {"use_reentrant": False}
    if hasattr(encoder, "activation_checkpointing_enable"):  # the newer transformers 5.x name
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)


@dataclass
class TrainResult:
    output_dir: Path
    step: int  # optimizer steps done
    steps: int  # steps asked for
    resumed_from: int  # 0 when started fresh
    interrupted: bool  # stopped early on request (stop_after)
    model_dir: Path | None  # the exported encoder, when the run completed
    best: dict | None  # {"step", "score", "set"} of the selected checkpoint
    last_eval: dict = field(default_factory=dict)
    data_report: dict = field(default_factory=dict)
    seconds: float = 0.0
    exported_only: bool = False  # export_only: nothing was trained
    stopped_early: bool = False  # eval.patience: the dev score stopped improving


# ----------------------------------------------------------------------------- the run


class Trainer:
    """State of one training process. ``run()`` does the work; see the module docstring."""

    def __init__(self, cfg: TrainConfig, info: D.DistInfo, progress: Listener | None) -> None:
        self.cfg, self.info = cfg, info
        self._progress = progress
        self.out = Path(cfg.run.output_dir)
        self.ckpt_dir = self.out / "checkpoints"

    def emit(self, kind: str, /, **data) -> None:
        """Send ``Event(kind, data=data)`` from the main process only."""
        if self.info.is_main:
            emit(self._progress, kind, **data)

    # -- setup ---------------------------------------------------------------

    def build(self, meta: dict | None = None) -> None:
        cfg, info = self.cfg, self.info
        self.pin_threads(meta)
        self.lm = load_model(cfg.model.name, device=info.device, pooling=cfg.model.pooling, prefix=cfg.model.prefix)
        self.recipe = self.lm.recipe
        self.dtype = resolve_precision(cfg.run.precision, info.device)
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.out / "data"
        tok_id = self.lm.fingerprint
        if info.is_main:
            self.data = prepare_data(cfg.data, self.lm.tokenizer, tok_id, self.recipe.prefix, cfg.run.seed, cache_dir, progress=self._progress)
        D.barrier(info)
        if not info.is_main:
            self.data = prepare_data(cfg.data, self.lm.tokenizer, tok_id, self.recipe.prefix, cfg.run.seed, cache_dir)
        if cfg.objective.hard_negatives:
            self.data = self.hard_negatives(cache_dir)

        encoder = self.lm.model
        encoder.train()
        self.dropout_config = {k: v for k, v in vars(encoder.config).items() if "dropout" in k and isinstance(v, float)}
        torch.manual_seed(cfg.run.seed)  # identical initialisation of the new parts on every process
        head = None
        self.rtl_vocab = 0
        if not cfg.tr_only:
            if self.lm.tokenizer.mask_token_id is None:
                raise ConfigError("the RTL head needs a tokenizer with a mask token; train TR only (objective.rtl_weight = 0)")
            vocab = torch.from_numpy(self.data.english_vocab()) if cfg.objective.rtl_vocab == "english" else None
            head = RTLHead(encoder, cfg.objective.rtl_layers, self.lm.tokenizer.mask_token_id, vocab, load_mlm_head(self.lm.folder))
            self.rtl_vocab = int(head.vocab_ids.numel())
        self.model = DualEncoder(encoder, self.recipe.pooling, pad_id=self.data.layout.pad_id, mlp=cfg.model.mlp, head=head).to(info.device)
        if cfg.model.freeze_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)
        if cfg.model.disable_dropout:
            disable_dropout(self.model)
        if cfg.model.gradient_checkpointing:
            enable_checkpointing(encoder)
        self.frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}
        self.ddp = self.model
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "LayerNorm" in n or "layer_norm" in n or n.endswith(".ln.weight") else decay).append(p)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                           lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, o.warmup_steps, o.steps))
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.dtype == torch.float16)
        self.sampler = Sampler([len(self.data.langs[lang]) for lang in self.data.languages], cfg.data.sampling_alpha, cfg.run.seed)
        torch.manual_seed(cfg.run.seed * 1000 + 17 + info.rank)  # dropout differs between processes
        per = o.batch_size // o.grad_accumulation
        if per % info.world:
            raise ConfigError(f"optim.batch_size / grad_accumulation = {per} pairs must divide among {info.world} processes")
        self.micro_global, self.micro_local = per, per // info.world
        self.dev_sets = dev_sets(cfg.eval, self.data)

    def hard_negatives(self, cache_dir: Path):
        """The training data cut to the hard-negative pools, with their negatives: mined with the starting
        weights by the main process (or read from ``cache_dir``, where runs from the same model share them)."""
        o, info = self.cfg.objective, self.info
        n, pool, depth = o.hard_negatives, o.hard_negative_pool, o.hard_negative_depth
        path = cache_dir / f"hardneg-{HN.cache_key(self.data, self.lm.fingerprint, n, pool, depth, self.cfg.run.seed)}.npz"
        negs = HN.load(path, self.data, n, pool) if path.is_file() else None
        if negs is None and info.is_main:
            self.emit("note", message=f"mining hard negatives with the starting model: {len(self.data.languages)} languages, "
                                      f"up to {pool:,} pairs each (once; cached in {cache_dir})")
            encoder, lay = self.lm.model, self.data.layout
            negs = HN.mine(self.data, lambda seqs, rows: HN.embed_ids(encoder, self.recipe.pooling, lay, seqs, rows),
                           lambda ids: self.lm.tokenizer.decode(ids.tolist()), n, pool, depth, self.cfg.run.seed)
            HN.save(path, negs)
        D.barrier(info)
        if negs is None:
            negs = HN.load(path, self.data, n, pool)
            if negs is None:
                raise InputError(f"{path}: the hard negatives the main process mined cannot be read")
        return HN.restrict(self.data, negs, pool)

    def pin_threads(self, meta: dict | None) -> None:
        """Set torch's CPU thread count explicitly: ``run.threads``, else the resumed checkpoint's, else torch's default."""
        saved = int(meta["state"].get("threads") or 0) if meta else 0
        wanted = self.cfg.run.threads or saved or torch.get_num_threads()
        torch.set_num_threads(wanted)
        self.threads = torch.get_num_threads()
        if saved and self.threads != saved:
            self.emit("note", message=f"resuming with {self.threads} CPU threads, the checkpoint was written with {saved}: "
                                      "the weights will differ in the last bits from an uninterrupted run")

    def data_state(self) -> dict:
        """What the training data is, for the resume check: fingerprint, per-language content digests, files."""
        if getattr(self, "_data_state", None) is None:
            self._data_state = {"fingerprint": self.data.fingerprint, "content": self.data.content_digests(), "files": self.data.files}
        return self._data_state

    # -- checkpoints (see training.checkpoint) ----------------------------------
    def save_checkpoint(self, step: int, best: dict | None) -> None:
        def state() -> dict:  # key order kept: it is the pickled order in state.pt
            return {
                "version": C.CKPT_VERSION, "step": step, "config_fingerprint": self.cfg.fingerprint(),
                "base_fingerprint": self.lm.fingerprint, "data_fingerprint": self.data.fingerprint, "world": self.info.world,
                "model": C.trainable_state(self.model, self.frozen), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "sampler": self.sampler.state_dict(),
                "best": best, "threads": self.threads, "data_content": data["content"], "data_files": data["files"],
            }

        data = self.data_state()
        C.save_last(self.ckpt_dir, self.info, state)

    def restore(self, meta: dict) -> tuple[int, dict | None]:
        C.check_resumable(meta["state"], self.out, config_fingerprint=self.cfg.fingerprint(), base_fingerprint=self.lm.fingerprint,
                          model_name=self.cfg.model.name, world=self.info.world, data=self.data_state())
        parts = {"optimizer": self.optimizer, "scheduler": self.scheduler, "scaler": self.scaler, "sampler": self.sampler}
        return C.restore(meta, self.out, self.model, self.frozen, parts, self.info.rank)

    def save_best(self, step: int, score: float, evals: dict) -> dict:
        best = {"step": step, "score": score, "set": self.cfg.eval.select_on}
        if self.info.is_main:
            C.save_best(self.ckpt_dir, C.trainable_state(self.model, self.frozen), {**best, "eval": evals})
        return best

    # -- one optimizer step ----------------------------------------------------
    def train_step(self, step: int) -> dict:
        cfg, info = self.cfg, self.info
        o = cfg.objective
        accum = cfg.optim.grad_accumulation
        sums = torch.zeros(3, dtype=torch.float64)  # tr loss sum over micro-batches, rtl token-loss sum, rtl tokens
        for micro in range(accum):
            samples = self.sampler.draw(step, micro, self.micro_global)
            b = self.micro_local
            batch = make_batch(self.data, samples[info.rank * b : (info.rank + 1) * b]).to(info.device)
            sync = contextlib.nullcontext() if (not info.distributed or micro == accum - 1) else self.ddp.no_sync()
            with sync:
                with torch.autocast(info.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                    out = self.ddp(batch)
                all_src = D.gather_with_grad(out.src, info)
                all_tgt = D.gather_with_grad(out.tgt, info)
                all_tgt_keys = D.gather(batch.tgt_key, info)
                if out.neg is not None:  # hard negatives: more English candidates after the global batch's own
                    all_tgt = torch.cat([all_tgt, D.gather_with_grad(out.neg, info)])
                    all_tgt_keys = torch.cat([all_tgt_keys, D.gather(batch.neg_key, info)])
                tr = translation_ranking_loss(
                    out.src, out.tgt, temperature=o.temperature, margin=o.margin, direction=o.direction,
                    all_src=all_src, all_tgt=all_tgt, offset=info.rank * b,
                    src_keys=batch.src_key, tgt_keys=batch.tgt_key,
                    all_src_keys=D.gather(batch.src_key, info), all_tgt_keys=all_tgt_keys)
                loss = tr
                if out.rtl_sum is not None:
                    n_all = float(D.all_sum(torch.tensor([out.rtl_tokens], dtype=torch.float64), info).item())
                    # token mean over all processes; DDP averages gradients, hence the factor world
                    rtl = out.rtl_sum * info.world / max(n_all, 1.0)
                    loss = tr + o.rtl_weight * rtl
                    sums[1] += float(out.rtl_sum.detach())
                    sums[2] += out.rtl_tokens
                sums[0] += float(tr.detach())
                self.scaler.scale(loss / accum).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optim.max_grad_norm > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm))
        else:
            gnorm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"sums": sums, "grad_norm": gnorm, "lr": lr}

    # -- the loop --------------------------------------------------------------
    def start(self, overwrite: bool, export_only: bool) -> tuple[int, dict | None]:
        """Check, build and restore: (step, best). The old run is deleted (``overwrite``) and the
        new config recorded only once the model, the data and the checkpoint have been checked; a new folder
        of a run that cannot start is removed again."""
        cfg, info = self.cfg, self.info
        if overwrite and export_only:
            raise InputError("{overwrite} and {export_only} cannot be combined", param=("overwrite", "export_only"))
        meta = None if overwrite else C.find_last(self.ckpt_dir)
        if export_only and meta is None:
            raise InputError(f"{self.out}: no checkpoint to export yet")
        self.emit("config", config=cfg.to_dict(), output_dir=str(self.out), world=info.world,
                  resume_step=int(meta["state"]["step"]) if meta else 0)
        claimed = RF.claim(self.out) if info.is_main else None
        try:
            self.build(meta)
            start, best = (self.restore(meta) if meta else (0, None))
        except BaseException:
            if claimed is not None:
                RF.abandon(self.out, *claimed)
            raise
        if info.is_main:
            if overwrite:
                cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.out / "data"
                RF.clear(self.out, keep={"data"} if cache.resolve() == (self.out / "data").resolve() else set())
            fs.atomic_write_text(self.out / "config.toml", cfg.to_toml())
            fs.atomic_write_text(self.out / "data_report.json", json.dumps(self.data.report, indent=1))
        D.barrier(info)
        return start, best

    def run(self, *, stop_after: int | None = None, export_only: bool = False, overwrite: bool = False) -> TrainResult:
        cfg, info = self.cfg, self.info
        t0 = time.perf_counter()
        start, best = self.start(overwrite, export_only)
        n_train = sum(len(d) for d in self.data.langs.values())
        self.emit("data_ready", report=self.data.report, train_pairs=n_train, languages=self.data.languages,
                  rtl_vocab=self.rtl_vocab, dev_sets=sorted({s.name for s in self.dev_sets}),
                  dtype=str(self.dtype).replace("torch.", ""), device=str(info.device),
                  trainable=sum(p.numel() for p in self.model.parameters() if p.requires_grad))
        total = cfg.optim.steps
        result = TrainResult(self.out, start, total, start, False, None, best, data_report=self.data.report)
        if export_only:
            saved = C.best_info(self.ckpt_dir)  # checkpoints/best may be newer than the last periodic checkpoint
            if saved is not None:
                result.best = best = {k: saved[k] for k in ("step", "score", "set")}
            result.exported_only = True
            result.model_dir = self.export(best, start)
            result.seconds = time.perf_counter() - t0
            return result
        log = MetricsLog(self.out / "metrics.jsonl", start, cfg.log.tensorboard, info.is_main)
        self.emit("train_start", step=start, steps=total, micro_batch=self.micro_local, accumulation=cfg.optim.grad_accumulation)
        window = torch.zeros(3, dtype=torch.float64)
        w_steps, w_time = 0, 0.0  # steps and seconds of training (evaluation and checkpoints excluded) since the last log line
        last_eval: dict = {}
        try:
            if start == 0 and cfg.eval.at_start and self.dev_sets:
                best, last_eval = self.dev_eval(0, best, log, last_eval)
            for step in range(start, total):
                t_step = time.perf_counter()
                r = self.train_step(step)
                w_time += time.perf_counter() - t_step
                done = step + 1
                window += r["sums"]
                w_steps += 1
                s = r["sums"]
                tr_now = float(s[0]) / cfg.optim.grad_accumulation
                rtl_now = float(s[1] / s[2]) if s[2] else None
                self.emit("step", step=done, steps=total, tr=tr_now, rtl=rtl_now, lr=r["lr"])
                if done % cfg.log.every == 0 or done == total:
                    rec = train_record(D.all_sum(window.clone(), info), done, w_steps, w_time, r, cfg, info.world)
                    log.write(rec)
                    self.emit("log", **rec)
                    window.zero_()
                    w_steps, w_time = 0, 0.0
                if self.dev_sets and ((cfg.eval.every and done % cfg.eval.every == 0) or done == total):
                    best, last_eval = self.dev_eval(done, best, log, last_eval)
                stop = self._no_progress(done, best)
                if done % cfg.run.save_every == 0 or done == total or stop:
                    self.save_checkpoint(done, best)
                    self.emit("checkpoint", step=done)
                result.step = done
                if stop and done < total:
                    result.stopped_early = True
                    self.emit("note", message=f"stopped early at step {done:,}: no better {cfg.eval.select_on} dev score in "
                                              f"{cfg.eval.patience} evaluations since step {best['step']:,} (eval.patience)")
                    break
                if stop_after is not None and done >= stop_after and done < total:
                    result.interrupted = True
                    break
        finally:
            log.close()
        result.best, result.last_eval = best, last_eval
        if not result.interrupted:
            result.model_dir = self.export(best, result.step)
        result.seconds = time.perf_counter() - t0
        return result

    def dev_eval(self, done: int, best: dict | None, log: MetricsLog, last_eval: dict) -> tuple[dict | None, dict]:
        """Evaluate on the dev sets (main process), log, keep the weights when they beat ``best``: (best, scores)."""
        if self.info.is_main:
            last_eval = evaluate(self.model.encoder, self.lm.tokenizer, self._eval_recipe(), self.dev_sets, self.cfg.run.precision)
            rec = {"kind": "eval", "step": done, **{f"{k}_{'f1' if k == 'mining' else 'p@1'}": v["mean"] for k, v in last_eval.items()}}
            sel = self.cfg.eval.select_on
            if sel in last_eval and (best is None or last_eval[sel]["mean"] > best["score"]):
                best = self.save_best(done, last_eval[sel]["mean"], last_eval)
            rec["best_step"] = best["step"] if best else None
            log.write(rec)
            self.emit("eval", step=done, results=last_eval, best=best)
        D.barrier(self.info)
        return best, last_eval

    def _no_progress(self, done: int, best: dict | None) -> bool:
        """Early stopping (``eval.patience``): ``patience`` evaluations since the best one, decided on the main
        process (the others never see the dev scores) and shared. Derived from the step and the best step
        only, so a resumed run stops where an uninterrupted one would."""
        e = self.cfg.eval
        if not e.patience or not e.every or done % e.every:
            return False
        stale = self.info.is_main and best is not None and (done - best["step"]) // e.every >= e.patience
        return bool(D.broadcast_object(bool(stale), self.info))

    def _eval_recipe(self) -> Recipe:
        mt = self.cfg.eval.max_tokens or self.cfg.data.max_length
        return self.recipe.with_overrides(max_tokens=mt)

    def export(self, best: dict | None, step: int) -> Path | None:
        """Write the selected weights (best dev checkpoint, else the last) to <output_dir>/model."""
        chosen = step
        state = C.load_best(self.ckpt_dir) if best is not None else None
        if state is not None:
            self.model.load_state_dict(state, strict=False)
            chosen = best["step"]
        path = None
        if self.info.is_main:
            mt = self.cfg.run.export_max_tokens or self.recipe.max_tokens
            kind = "TR" if self.cfg.tr_only else "DAP (TR+RTL)"
            recipe = self.recipe.with_overrides(max_tokens=mt, name=f"{self.recipe.name} + {kind}")
            thr = tuned_threshold(C.best_info(self.ckpt_dir)) if best is not None and best["set"] == "mining" else None
            recipe = Recipe(**{**recipe.__dict__, "threshold": thr, "threshold_margin": "ratio" if thr else None,
                               "threshold_k": 4 if thr else None})
            info = {"base_model": self.cfg.model.name, "base_fingerprint": self.lm.fingerprint, "step": chosen,
                    "steps_run": step, "best": best, "config": self.cfg.to_dict()}
            overrides = self.dropout_config if self.cfg.model.disable_dropout else None
            path = export_encoder(self.model.encoder, self.lm.tokenizer, recipe, self.out / "model", info, overrides)
            self.emit("export", path=str(path), step=chosen)
            if best is not None and chosen == 0:
                self.emit("note", message=f"no trained step beat the starting weights on the {best['set']} dev set: "
                                          "the exported model is the starting model")
        D.barrier(self.info)
        return path


def train(cfg: TrainConfig, *, progress: Listener | None = None, overwrite: bool = False, stop_after: int | None = None,
          export_only: bool = False, device: str | None = None) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring.

    ``overwrite`` starts over: the previous run's files are deleted once the config, model and data
    have been checked, and only from a folder that is recognisably a run folder
    (:mod:`~bitextmine.training.runfolder`; another non-empty folder is refused either way, and
    the folder is locked while the run lasts); ``stop_after`` stops after that many
    optimizer steps as if the process were killed (no extra checkpoint: the next run resumes
    from the last periodic one); ``export_only`` exports the current best/last checkpoint.

    ``progress`` receives :class:`~bitextmine.events.Event` s (kind: data fields): ``config``
    (config, output_dir, world, resume_step), ``data`` per prepared language (lang and its
    counts), ``data_ready`` (report, train_pairs, languages, rtl_vocab, dev_sets, dtype, device,
    trainable), ``start`` (step, steps, micro_batch, accumulation), ``step`` (step, steps, tr,
    rtl, lr), ``log`` (the metrics.jsonl record), ``eval`` (step, results, best), ``checkpoint``
    (step), ``export`` (path, step) and ``note`` (message: something the user should know).
    """
    info = D.setup(device)
    try:
        with RF.RunLock(Path(cfg.run.output_dir), info, overwrite=overwrite):
            return Trainer(cfg, info, progress).run(stop_after=stop_after, export_only=export_only, overwrite=overwrite)
    finally:
        D.cleanup(info)
