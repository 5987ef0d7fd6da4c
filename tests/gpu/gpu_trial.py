"""For machines with a GPU: one trial on CUDA through the same trial function a study uses, and the
per-step time of the RGD step on the GPU against the CPU, side by side.

Run: .venv/bin/python tests/gpu/gpu_trial.py   (fails loudly when no GPU is visible)
     .venv/bin/python tests/gpu/gpu_trial.py --dry   (no GPU needed: the same code on the CPU, small sizes)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orthoscale import data, init, losses, optim
from orthoscale.network import Architecture
from orthoscale.workspace import Workspace
from orthoscale.study.compose import plan
from orthoscale.study.trial import run_trial


def rgd_step(blocks, prob, arch, opt, ws):
    """One step as train.train takes it: gradients with their frames, then the update, buffers reused."""
    ev = losses.squared_fast(blocks, prob, ws)
    return optim.step(blocks, ev.block_grads, arch, opt, ev.frames, ws)


def step_time(device: str, dtype, depth: int, width: int, reps: int = 50) -> float:
    arch = Architecture((width,) * (depth + 1))
    g = torch.Generator().manual_seed(0)
    prob = data.teacher_student(arch, samples=width, generator=g, dtype=dtype, device=device)
    blocks = [B.to(device) for B in init.random_blocks(arch, generator=g, dtype=dtype)]
    opt, ws = optim.Optimizer(0.01), Workspace()
    for _ in range(5):
        blocks = rgd_step(blocks, prob, arch, opt, ws)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        blocks = rgd_step(blocks, prob, arch, opt, ws)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def dry_run() -> int:
    """The timing code on the CPU alone, at small sizes: a check of this script where no GPU is lent."""
    for depth, width in ((16, 64), (8, 128)):
        for dtype in (torch.float32, torch.float64):
            print(f"dry, cpu only: N={depth} d={width} {str(dtype)[6:]}: "
                  f"{1e3 * step_time('cpu', dtype, depth, width, reps=2):.2f} ms/step")
    return 0


def main() -> int:
    if "--dry" in sys.argv[1:]:
        return dry_run()
    if not torch.cuda.is_available():
        print("no CUDA device visible: this script is for GPU machines", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 here; TF32 is an explicit choice
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    (cfg, _, cells), = plan(["optim.device=cuda", "optim.protocol=fixed", "model.depth=16", "model.width=64",
                             "data.dtype=float32"], grid=False)
    res = run_trial(cells[0].cfg).to_dict()
    print(f"trial on {res['device']}: {res['outcome']} after {res['steps']} steps, "
          f"{1e3 * res['seconds_per_step']:.2f} ms/step")
    print(f"{'N':>5} {'d':>5} {'dtype':>8} {'cpu ms':>9} {'cuda ms':>9} {'cpu/cuda':>9}")
    for depth, width in ((16, 64), (64, 128), (256, 256), (32, 1024)):
        for dtype in (torch.float32, torch.float64):
            cpu = step_time("cpu", dtype, depth, width, reps=5)
            gpu = step_time("cuda", dtype, depth, width)
            print(f"{depth:>5} {width:>5} {str(dtype)[6:]:>8} {1e3 * cpu:>9.2f} {1e3 * gpu:>9.2f} {cpu / gpu:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
