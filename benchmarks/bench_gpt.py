"""Throughput of the GPT trainer against a plain eager PyTorch loop on the same model.

    .venv/bin/python benchmarks/bench_gpt.py                      # CPU (and GPU if visible)
    .venv/bin/python benchmarks/bench_gpt.py --sizes 1e5,3e5 --tokens 2e5 --threads 1
    python3 benchmarks/bench_gpt.py --gpu-only --gpu-modes eager,compile   # on a CUDA machine

For each model size N it times
  reference: the simplest training loop - the same ``GPT`` module and AdamW settings, batches
             pre-sampled into memory, forward, backward, step; no LR schedule, clipping, data
             sampling, loss checks or evaluation;
  trainer:   ``GPTTrainer`` on ``--tokens`` tokens of a two-domain mixture with no intermediate
             checkpoints; its ``metadata["tokens_per_second"]`` (training loop only, evaluation
             excluded) and its wall time for the whole call (setup and one evaluation included).
Each is repeated ``--repeats`` times, interleaved, and the best is kept. On the CPU the rows also
give tokens per CPU second (process time; the trainer's includes its setup and one evaluation),
which other processes sharing the cores disturb far less than wall-clock rates.
On a GPU both run in bf16 autocast and the report adds model FLOPs utilisation,
MFU = flops_per_token(cfg) x tokens/s / peak, with the peak dense bf16 rate of the card
(H100/H200 SXM: 989 TFLOP/s; override with --peak-tflops). flops_per_token counts 6N, the tied
head and attention (``trainers.gpt_model.flops_per_token``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.base import RunSpec  # noqa: E402
from trainers.gpt import GPTTrainer, TrainConfig  # noqa: E402
from trainers.gpt_model import GPT, config_for_params, flops_per_token  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def reference_loop(N: float, tokens: int, cfg: TrainConfig, device: torch.device,
                   seed: int = 0) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of a plain eager loop over the same model
    (warm-up steps excluded)."""
    mcfg = config_for_params(N, seq_len=cfg.seq_len)
    model = GPT(mcfg, generator=torch.Generator().manual_seed(seed)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    if cfg.compile:
        model = torch.compile(model)
    steps = max(4, tokens // (cfg.batch_size * cfg.seq_len))
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (8, cfg.batch_size, cfg.seq_len + 1), generator=gen).to(device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext

    def step(i: int) -> None:
        batch = data[i % data.shape[0]]
        with autocast():
            _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(3 if not cfg.compile else 6):  # warm-up (allocator, kernels, compilation)
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n = steps * cfg.batch_size * cfg.seq_len
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def trainer_run(trainer: GPTTrainer, N: float, tokens: int, seed: int = 0) -> tuple[float, float, float, int]:
    """(loop tokens/s, whole-call tokens/s, whole-call tokens per CPU second, real N)."""
    spec = RunSpec(run_id="bench", N=int(N), D=int(tokens), h={"python": 0.5, "prose": 0.5}, seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    r = trainer(spec)
    D = r.metadata["D"]
    return (r.metadata["tokens_per_second"], D / (time.perf_counter() - t0),
            D / (time.process_time() - c0), r.metadata["N"])


def bench(device: torch.device, sizes: list[float], tokens: int, repeats: int, corpus: str | None,
          peak_tflops: float | None, **train) -> list[dict]:
    cfg = TrainConfig(device=str(device), checkpoints=(), eval_tokens=4096, **train)
    kw = {k: v for k, v in cfg.__dict__.items() if k != "checkpoints"}
    trainer = GPTTrainer(corpus=corpus, checkpoints=[], **kw)
    trainer.corpus(["python", "prose"])  # build/load once, outside the timings
    rows = []
    for N in sizes:
        mcfg = config_for_params(N, seq_len=cfg.seq_len)
        refs, runs = [], []
        for i in range(repeats):  # interleaved, so a burst of load from elsewhere hits both
            refs.append(reference_loop(N, tokens, cfg, device, seed=i))
            runs.append(trainer_run(trainer, N, tokens, seed=i))
        ref, ref_cpu = max(r[0] for r in refs), max(r[1] for r in refs)
        tr_loop, tr_wall, tr_cpu = (max(r[j] for r in runs) for j in range(3))
        row = {"device": str(device), "N_requested": N, "N": runs[0][3], "n_layer": mcfg.n_layer,
               "d_model": mcfg.d_model, "seq_len": cfg.seq_len, "batch_size": cfg.batch_size,
               "tokens": tokens, "reference_tok_s": round(ref), "trainer_loop_tok_s": round(tr_loop),
               "trainer_wall_tok_s": round(tr_wall), "trainer_vs_reference": round(tr_loop / ref, 3),
               "compile": cfg.compile}
        if device.type == "cpu":  # per CPU second: robust to other processes sharing the cores
            row.update(reference_tok_per_cpu_s=round(ref_cpu), trainer_tok_per_cpu_s=round(tr_cpu),
                       trainer_vs_reference_cpu=round(tr_cpu / ref_cpu, 3))
        if device.type == "cuda" and peak_tflops:
            fpt = flops_per_token(mcfg)
            row["mfu_reference"] = round(fpt * ref / (peak_tflops * 1e12), 4)
            row["mfu_trainer"] = round(fpt * tr_loop / (peak_tflops * 1e12), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1e5,3e5,1e6", help="CPU model sizes N (comma-separated)")
    p.add_argument("--tokens", type=float, default=3e5, help="tokens per timed CPU run")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--corpus", default=None, help="corpus dir (default: the trainer's default)")
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--gpu-sizes", default="1e7,5e7,2e8")
    p.add_argument("--gpu-tokens", type=float, default=2e7)
    p.add_argument("--gpu-seq-len", type=int, default=512)
    p.add_argument("--gpu-batch", type=int, default=64)
    p.add_argument("--gpu-modes", default="eager", help="eager, compile or eager,compile")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine()}
    rows: list[dict] = []
    if not a.gpu_only:
        threads = a.threads or len(os.sched_getaffinity(0))
        info["threads"] = threads
        print(f"# CPU, {threads} threads, torch {torch.__version__}", flush=True)
        rows += bench(torch.device("cpu"), [float(x) for x in a.sizes.split(",")], int(a.tokens),
                      a.repeats, a.corpus, None, num_threads=threads)
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = a.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        info.update(gpu=name, peak_bf16_tflops=peak)
        print(f"# GPU {name}, peak bf16 {peak} TFLOP/s", flush=True)
        for compiled in [m == "compile" for m in a.gpu_modes.split(",")]:
            rows += bench(torch.device("cuda"), [float(x) for x in a.gpu_sizes.split(",")],
                          int(a.gpu_tokens), a.repeats, a.corpus, peak, seq_len=a.gpu_seq_len,
                          batch_size=a.gpu_batch, compile=compiled, lr=1e-3)
    elif a.gpu_only:
        print("no CUDA device visible", file=sys.stderr)
        return 1
    if a.out:
        Path(a.out).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
