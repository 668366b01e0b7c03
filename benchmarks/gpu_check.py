"""One short GPU check of the sampling kernels: the Gibbs sweep's fraction of the device's
matmul rate, and batched tempering against plain Gibbs on the same chains.

    .venv/bin/python benchmarks/gpu_check.py                 # CUDA, well under 5 minutes
    .venv/bin/python benchmarks/gpu_check.py --toy --device cpu   # seconds, for the test suite

Three measurements, each at the sizes of the default runs (L = 112, q = 21, Nh = 500):

1. `gpu_sweeps.run`: sweeps per second and the sweep's nominal rate (two products per sweep)
   as a fraction of a dense matmul of the same shape, with TF32 off and on;
2. tempering: K levels x C chains swept together (`tempering.temper`) against plain Gibbs
   on K x C chains; the ratio says what the swaps and the stacked parameters cost beyond
   one sampler (1.0: tempering at the cost of one sampler);
3. the Gaussian effective couplings at L = 202, Nh = 200 (`couplings_gaussian`), in seconds.

Prints one line per measurement and writes a JSON summary with --out.
"""

from __future__ import annotations

import argparse
import json
import runpy
import time
from pathlib import Path

import torch
from rbmflow.device import resolve_device
from rbmflow.model.couplings import couplings_gaussian
from rbmflow.model.rbm import PottsRBM, random_codes
from rbmflow.sampling.tempering import beta_levels, temper

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--toy", action="store_true", help="tiny sizes (a CPU run in seconds)")
    p.add_argument("--out", type=Path, default=None, help="JSON summary to write")
    return p.parse_args(argv)


def sizes(toy: bool) -> dict[str, int]:
    if toy:
        return {"length": 7, "hidden": 5, "chains": 31, "sweeps": 3, "levels": 3,
                "level_chains": 13, "contact_length": 6, "contact_hidden": 4}
    return {"length": 112, "hidden": 500, "chains": 5000, "sweeps": 100, "levels": 8,
            "level_chains": 1000, "contact_length": 202, "contact_hidden": 200}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:  # noqa: ANN001
    """Seconds of one call after a warm-up call."""
    fn()
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def random_model(L: int, nh: int, device: torch.device, generator: torch.Generator
                 ) -> PottsRBM:
    return PottsRBM(0.05 * torch.randn(L, 21, nh, device=device, generator=generator),
                    torch.randn(L, 21, device=device, generator=generator),
                    0.1 * torch.randn(nh, device=device, generator=generator))


def tempering_cost(size: dict[str, int], device: torch.device) -> dict[str, float]:
    """Seconds per sweep of K levels x C chains tempered, and of plain Gibbs on K x C chains."""
    g = torch.Generator(device=device).manual_seed(1)
    model = random_model(size["length"], size["hidden"], device, g)
    K, C, sweeps = size["levels"], size["level_chains"], size["sweeps"]
    levels = beta_levels(model, K)
    codes = random_codes(K * C, size["length"], 21, device, g)
    gibbs_s = timed(lambda: model.gibbs(codes, sweeps, generator=g), device) / sweeps
    temper_s = timed(lambda: temper(levels, C, sweeps, g), device) / sweeps
    print(f"tempering {K} levels x {C} chains: {temper_s * 1e3:.3f} ms per sweep; plain Gibbs "
          f"on {K * C} chains {gibbs_s * 1e3:.3f} ms ({temper_s / gibbs_s:.2f} x)")
    return {"tempering_sweep_s": temper_s, "gibbs_sweep_s": gibbs_s,
            "tempering_over_gibbs": temper_s / gibbs_s}


def couplings_cost(size: dict[str, int], device: torch.device) -> dict[str, float]:
    g = torch.Generator(device=device).manual_seed(2)
    L, nh = size["contact_length"], size["contact_hidden"]
    model = random_model(L, nh, device, g).to(dtype=torch.float64)
    backgrounds = random_codes(200, L, 21, device, g)
    t0 = time.perf_counter()
    couplings_gaussian(model, backgrounds, work_dtype=torch.float32)
    synchronize(device)
    seconds = time.perf_counter() - t0
    print(f"Gaussian effective couplings, L = {L}, Nh = {nh}: {seconds:.2f} s")
    return {"couplings_s": seconds}


def run(args: argparse.Namespace) -> dict[str, object]:
    device = resolve_device(args.device)
    size = sizes(args.toy)
    sweeps = runpy.run_path(str(HERE / "gpu_sweeps.py"))
    result: dict[str, object] = {"device": str(device), "toy": args.toy}
    for tf32 in (False, True):
        flags = ["--device", str(device), "--length", str(size["length"]), "--hidden",
                 str(size["hidden"]), "--chains", str(size["chains"]), "--sweeps",
                 str(size["sweeps"]), "--repeats", "2"] + (["--tf32"] if tf32 else [])
        result["sweep_tf32" if tf32 else "sweep"] = sweeps["run"](sweeps["parse_args"](flags))
    torch.backends.cuda.matmul.allow_tf32 = False
    result["tempering"] = tempering_cost(size, device)
    result["couplings"] = couplings_cost(size, device)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
