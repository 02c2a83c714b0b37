"""The built-in PyTorch trainer: a byte-level GPT sized from N, trained on D tokens mixed by h.

``GPTTrainer(**args)(spec) -> RunResult``. Per run it builds the model that the sizing rule in
``trainers.gpt_model`` gives for ``spec.N`` (the real non-embedding count goes to
``metadata["N"]``), draws ``spec.D`` training tokens from the domains in proportions ``spec.h``
(``trainers.sampling``), and trains with AdamW: linear warm-up over a fixed number of tokens, then
a constant learning rate. Because nothing in the schedule depends on D, the model after t tokens
is the same whatever D the run was asked for, so the validation losses measured at intermediate
checkpoints are valid observations at D = t (they share the run's noise; DESIGN.md section 4).

Losses are mean cross-entropy in nats per byte on fixed held-out windows of each target domain
(``targets``; default: every domain of the run's h). The corpus is built on first use if it is
missing (``trainers.data.ensure_corpus``, under a file lock).

Device: ``device="auto"`` uses CUDA with bf16 autocast when a GPU is visible (Ray sets
CUDA_VISIBLE_DEVICES for runs given GPUs), else the CPU in float32 (``precision`` overrides:
"fp32" on a GPU reproduces CPU numerics more closely). On the CPU the thread count is
``num_threads`` if given, else OMP_NUM_THREADS if set (Ray sets it to the run's CPUs), else the
CPUs this process may use. Two CPU runs with one seed and one thread count give identical losses.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch

from trainers.base import RunResult, RunSpec
from trainers.data import Corpus, ensure_corpus
from trainers.gpt_model import GPT, config_for_params, flops_per_token
from trainers.sampling import MixtureSampler, eval_windows


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings shared by every run of a campaign."""

    seq_len: int = 128           # bytes of context; short keeps small CPU runs MLP-bound
    batch_size: int = 8          # sequences per step: 1024 tokens, ~200 steps at D = 2e5
    lr: float = 3e-3             # peak = constant LR; small byte-level models tolerate 3e-3
    warmup_tokens: int = 32_768  # fixed (not a fraction of D) so checkpoints equal shorter runs
    weight_decay: float = 0.1    # on matrices only; LayerNorm weights are not decayed
    beta1: float = 0.9
    beta2: float = 0.95          # the usual LM setting: faster second-moment tracking
    grad_clip: float = 1.0       # guards the first steps of tiny models at a high LR
    mixing: str = "stratified"   # realised mixture = h exactly; "iid": binomial around h
    checkpoints: tuple[float, ...] = (0.25, 0.5)  # fractions of D with an extra evaluation
    eval_tokens: int = 16_384    # predicted bytes per target per evaluation (128 windows)
    eval_batch: int = 64         # windows per forward pass at evaluation
    device: str = "auto"         # "auto", "cpu", "cuda" or "cuda:K"
    compile: bool = False        # torch.compile the model: pays off on GPUs for larger N only
    precision: str = "auto"      # "auto": bf16 autocast on CUDA, fp32 on CPU; or "fp32", "bf16"
    num_threads: int | None = None  # CPU threads; None: OMP_NUM_THREADS or the CPUs available

    def __post_init__(self) -> None:
        if any(not 0.0 < f < 1.0 for f in self.checkpoints):
            raise ValueError(f"checkpoint fractions must be in (0, 1), got {self.checkpoints}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.mixing not in ("stratified", "iid"):
            raise ValueError(f"mixing must be 'stratified' or 'iid', got {self.mixing!r}")
        if self.seq_len < 8 or self.batch_size < 1 or self.lr <= 0 or self.eval_tokens < 1:
            raise ValueError(f"bad training settings: {self}")


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA device is visible")
    return dev


def _cpu_threads(requested: int | None) -> int:
    if requested is not None:
        return max(1, int(requested))
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == "cuda")


@torch.no_grad()
def evaluate(model: GPT, windows: dict[str, torch.Tensor], batch: int, autocast) -> dict[str, float]:
    """Mean next-byte cross-entropy (nats) per target over its fixed windows."""
    model.eval()
    out = {}
    for name, w in windows.items():
        total, count = 0.0, 0
        for i in range(0, w.shape[0], batch):
            chunk = w[i:i + batch]
            with autocast():
                _, loss = model(chunk[:, :-1], chunk[:, 1:])
            total += float(loss) * chunk.shape[0]
            count += chunk.shape[0]
        out[name] = total / count
    model.train()
    return out


class GPTTrainer:
    """Trains a byte-level GPT per RunSpec. Built once per worker; call it with a RunSpec.

    corpus: corpus directory (default ``~/.cache/mixture-planner/corpora/default``, or
        $MIXTURE_PLANNER_CORPORA/default); built on first use if missing.
    sources: {domain: glob or [globs]} to use your own files for a domain instead of a built-in.
    targets: domains to evaluate (default: the domains of each run's h). They may include
        domains that are not trained on, e.g. a held-out target.
    build: extra corpus build options (``max_bytes``, ``val_fraction``, ``max_doc_bytes``, ``seed``).
    Every other keyword is a ``TrainConfig`` field (seq_len, batch_size, lr, warmup_tokens,
    weight_decay, beta1, beta2, grad_clip, mixing, checkpoints, eval_tokens, eval_batch, device,
    compile, precision, num_threads).
    """

    def __init__(self, corpus: str | None = None, sources: dict[str, str | list[str]] | None = None,
                 targets: list[str] | None = None, build: dict | None = None, **train):
        if "checkpoints" in train:
            train["checkpoints"] = tuple(float(f) for f in train["checkpoints"])
        self.cfg = TrainConfig(**train)
        self.corpus_dir = corpus
        self.sources = dict(sources or {})
        self.targets = list(targets) if targets is not None else None
        self.build = dict(build or {})
        self._corpus: Corpus | None = None

    def corpus(self, domains: list[str]) -> Corpus:
        """The loaded corpus holding ``domains`` (building missing ones), cached per trainer."""
        have = self._corpus
        if have is None or any(d not in have.train for d in domains):
            need = sorted(set(domains) | (set(have.train) if have else set()))
            self._corpus = ensure_corpus(self.corpus_dir, need, sources=self.sources or None, **self.build)
        return self._corpus

    def __call__(self, spec: RunSpec) -> RunResult:
        cfg = self.cfg
        t_start = time.perf_counter()
        targets = self.targets if self.targets is not None else sorted(spec.h)
        corpus = self.corpus(sorted(set(spec.h) | set(targets)))
        device = _pick_device(cfg.device)
        if device.type == "cpu":
            torch.set_num_threads(_cpu_threads(cfg.num_threads))
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext)

        mcfg = config_for_params(spec.N, seq_len=cfg.seq_len)
        init_gen = torch.Generator().manual_seed(int(spec.seed))
        model = GPT(mcfg, generator=init_gen).to(device)
        opt = _optimizer(model, cfg, device)
        if cfg.compile:
            model = torch.compile(model)
        sampler = MixtureSampler(corpus.train, spec.h, cfg.seq_len,
                                 seed=int(np.random.SeedSequence([int(spec.seed), 1]).generate_state(1)[0]),
                                 mixing=cfg.mixing)
        windows = {t: torch.from_numpy(eval_windows(corpus.val[t], cfg.seq_len, cfg.eval_tokens)).to(device)
                   for t in targets}

        n_seq = math.ceil(spec.D / cfg.seq_len)  # the run sees D tokens rounded up to whole sequences
        marks = sorted({math.ceil(f * n_seq) for f in cfg.checkpoints} - {0, n_seq})
        warmup_steps = max(1, math.ceil(cfg.warmup_tokens / (cfg.batch_size * cfg.seq_len)))
        checkpoints: list[tuple[int, dict[str, float]]] = []
        seen, step, train_loss, t_eval = 0, 0, float("nan"), 0.0
        t_train = time.perf_counter()
        while seen < n_seq:
            # Every batch is full except possibly the last, so the first k steps of any run with
            # this seed are identical whatever its D; a checkpoint is taken after the step that
            # reaches its mark and reports the tokens actually seen.
            b = min(cfg.batch_size, n_seq - seen)
            x, y, _ = sampler.batch(b)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (step + 1) / warmup_steps)
            with autocast():
                _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seen += b
            step += 1
            at_mark = bool(marks) and marks[0] <= seen < n_seq
            if step % 25 == 0 or at_mark or seen == n_seq:  # reading the loss syncs a GPU: not every step
                train_loss = float(loss.detach())
                if not math.isfinite(train_loss):
                    raise FloatingPointError(f"run {spec.run_id}: training loss is {train_loss} at step {step}")
            if at_mark:
                while marks and marks[0] <= seen:
                    marks.pop(0)
                t0 = time.perf_counter()
                checkpoints.append((seen * cfg.seq_len, evaluate(model, windows, cfg.eval_batch, autocast)))
                t_eval += time.perf_counter() - t0
        t0 = time.perf_counter()
        losses = evaluate(model, windows, cfg.eval_batch, autocast)
        t_eval += time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - t_train - t_eval
        tokens = n_seq * cfg.seq_len
        metadata = {
            "N": mcfg.non_embedding_params, "D": tokens, "N_requested": int(spec.N),
            "n_layer": mcfg.n_layer, "d_model": mcfg.d_model, "n_head": mcfg.n_head,
            "steps": step, "final_train_loss": train_loss, "device": str(device),
            "dtype": "bfloat16" if use_bf16 else "float32",
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "train_seconds": round(train_s, 3), "eval_seconds": round(t_eval, 3),
            "seconds": round(time.perf_counter() - t_start, 3),
            "tokens_per_second": round(tokens / max(train_s, 1e-9), 1),
            "train_flops": flops_per_token(mcfg) * tokens,
            "corpus": str(corpus.root),
            "corpus_sha256": {d: corpus.manifest["domains"][d]["sha256"]["train"][:16] for d in corpus.train},
            "train_config": asdict(cfg),
        }
        return RunResult(run_id=spec.run_id, losses=losses, checkpoints=checkpoints, metadata=metadata)
