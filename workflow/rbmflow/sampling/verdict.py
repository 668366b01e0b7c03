"""The equilibrium verdict of the sample stage, as functions of the samplers' diagnostics.

Each sampler returns its samples with its own diagnostics (plain Gibbs: `gibbs_chains`;
tempering: `tempered`); the functions here turn diagnostics into named checks, each a dict
with its numbers and `passed`, and the checks into a verdict. They compute nothing from the
model itself.

The statistics that need independent draws (R-hat) are computed on records thinned by the
measured integrated autocorrelation time tau (one record per ceil(tau) sweeps), over the
second half of the run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rbmflow.sampling.mixing import (
    Criteria,
    compare_projections,
    integrated_autocorrelation_time,
    project,
    split_rhat,
)

if TYPE_CHECKING:
    from rbmflow.sampling.tempered import TemperingPlan, _Segments


def projection_checks(trace: Tensor, trace_sweeps: list[int], sweeps: int,
                      rhat_max: float) -> dict[str, dict[str, Any]]:
    """R-hat and integrated autocorrelation time of projections over the second half of a run.

    trace: (T, C, d) recorded at `trace_sweeps` (evenly spaced); only records after sweeps / 2
    are used. autocorrelation passes when that half spans at least 10 autocorrelation times
    tau (in sweeps); rhat when every direction's split R-hat, on the records thinned to one
    per ceil(tau) sweeps, is <= rhat_max (and at least 4 thinned records exist).
    """
    keep = [k for k, t in enumerate(trace_sweeps) if 2 * t > sweeps]
    if len(keep) < 4:
        return {}
    part = trace[keep]
    step = trace_sweeps[keep[1]] - trace_sweeps[keep[0]]
    tau = integrated_autocorrelation_time(part) * step
    thin = max(1, math.ceil(float(tau.max()) / step))
    thinned = part.flip(0)[::thin].flip(0)
    rhat = split_rhat(thinned if thinned.shape[0] >= 4 else part)
    span = trace_sweeps[keep[-1]] - trace_sweeps[keep[0]] + step
    return {
        "rhat": {"rhat": rhat.tolist(), "rhat_max": rhat_max, "records": int(thinned.shape[0]),
                 "thinned_every_sweeps": thin * step,
                 "passed": bool((rhat <= rhat_max).all() and thinned.shape[0] >= 4)},
        "autocorrelation": {"tau_sweeps": tau.tolist(), "span_sweeps": span,
                            "resolution_sweeps": step,
                            "passed": bool((10 * tau <= span).all())},
    }


def gibbs_mode_checks(trace: Tensor | None, trace_sweeps: list[int], sweeps: int,
                      rhat_max: float) -> dict[str, dict[str, Any]]:
    """`projection_checks` of a plain Gibbs run ({} without a trace)."""
    if trace is None:
        return {}
    return projection_checks(trace, trace_sweeps, sweeps, rhat_max)


def tempering_checks(gathered: _Segments, chains: int, plan: TemperingPlan,
                     multi_level: bool) -> tuple[dict[str, dict[str, Any]], int]:
    """The checks of a tempering run so far, and the spacing (sweeps) of independent reads.

    swap_rates: every neighbouring rate >= plan.min_swap_rate; passages: at least as many
    first-to-last-level passages as chains per level (every target chain renewed from the
    easy end, on average); rhat and autocorrelation (`projection_checks`); samples: the
    second half holds at least plan.num_samples reads of the target chains spaced by
    2 tau (independent draws).
    """
    checks: dict[str, dict[str, Any]] = {}
    if multi_level:
        rates = gathered.swap_rates
        low = min(rates) if rates else None
        checks["swap_rates"] = {"min_swap_rate": low, "threshold": plan.min_swap_rate,
                                "passed": bool(low is not None and low >= plan.min_swap_rate)}
        checks["passages"] = {"passages": gathered.passages, "chains": chains,
                              "passed": gathered.passages >= chains}
    trace = torch.cat(gathered.projections, dim=0)
    found = projection_checks(trace, gathered.sweeps, gathered.total, plan.rhat_max)
    if not found:
        checks["rhat"] = {"passed": False, "reason": "fewer than 4 records in the second half"}
        return checks, gathered.total
    checks.update(found)
    tau = max(found["autocorrelation"]["tau_sweeps"])
    spacing = max(plan.record_every, math.ceil(2 * tau))
    half = found["autocorrelation"]["span_sweeps"]
    reads = 1 + (half - plan.record_every) // spacing
    checks["samples"] = {"independent_reads": reads, "chains": chains,
                         "independent_samples": reads * chains, "needed": plan.num_samples,
                         "spacing_sweeps": spacing,
                         "passed": reads * chains >= plan.num_samples}
    return checks, spacing


def compare_with_reference(reference: Tensor, plain: Tensor, directions: Tensor,
                           criteria: Criteria) -> dict[str, Any]:
    """Tempering samples against plain Gibbs samples, codes (C_a, L) and (C_b, L): a KS test
    per projection on W's top singular vectors (`compare_projections`), with the mean of
    each projection in both sets."""
    a, b = project(reference, directions), project(plain, directions)
    out = compare_projections(a, b, effect_max=criteria.effect_max / 2)
    out["mean_tempering"] = a.mean(0).tolist()
    out["mean_gibbs"] = b.mean(0).tolist()
    return out


def failed(checks: dict[str, dict[str, Any]]) -> list[str]:
    """Names of the checks that did not pass."""
    return [name for name, check in checks.items() if not check.get("passed", True)]


def verdict(checks: dict[str, dict[str, Any]]) -> bool:
    """Equilibrated: at least one check, and every check passed."""
    return bool(checks) and not failed(checks)
