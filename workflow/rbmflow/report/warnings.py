"""The warnings of one run, gathered from every stage's outputs for the top of report.html and
the `warnings` list of metrics.json.

Each warning is one line, `stage: what was found, with its number; what to do`:
- train: the equilibrium monitor at the last monitored row of train_log.csv (KS distance of
  the persistent chains to equilibrium samples above its critical value);
- loglik: the warnings loglik.json carries (estimates of log Z that disagree, small effective
  sample sizes), and a log Z computed at an earlier checkpoint than the model's last;
- sample: chains that did not equilibrate, plain Gibbs disagreeing with tempering, samples
  drawn from an earlier checkpoint than the model's last.
(An incomplete checkpoint is not a warning: model.h5 is refused when it holds one.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

LOGLIK_ADVICE = ("rerun loglik with more chains and temperatures (loglik.chains, loglik.betas) "
                 "and trust the log-likelihood rows only to within the gap")
SAMPLE_ADVICE = ("rerun sample with more sweeps (sample.sweeps) or with tempering "
                 "(sample.method: ptt); the metrics of the generated sequences may not be "
                 "the model's")
TRAIN_ADVICE = ("the gradient's model term was biased: train longer, with more chains, with "
                "the model term from tempered chains (equilibrium_chains, docs/training.md), "
                "or with chains refreshed by tempering (refresh_every, lr_decay); see the "
                "training curves")


def training_warnings(train_log: pd.DataFrame | None) -> list[str]:
    """The equilibrium monitor at the last row of train_log.csv that holds it."""
    needed = {"update", "monitor_ks", "monitor_ks_critical"}
    if train_log is None or not needed <= set(train_log.columns):
        return []
    rows = train_log.dropna(subset=["monitor_ks", "monitor_ks_critical"])
    if rows.empty:
        return []
    last = rows.iloc[-1]
    ks, critical = float(last["monitor_ks"]), float(last["monitor_ks_critical"])
    if not ks > critical:
        return []
    reference = last.get("monitor_reference")
    against = f" vs {reference} samples" if isinstance(reference, str) and reference else ""
    return [f"train: at update {int(last['update'])}, the last monitored, the persistent chains "
            f"are not at the model's equilibrium (KS distance {ks:.3f} > critical "
            f"{critical:.3f}{against}); {TRAIN_ADVICE}"]


def loglik_warnings(loglik: dict[str, Any] | None) -> list[str]:
    """The warnings loglik.json carries (a string or a list), each with what to do."""
    if loglik is None:
        return []
    raw = loglik.get("warnings") or loglik.get("warning") or []
    items = [raw] if isinstance(raw, str) else list(raw)
    return [f"loglik: {str(item).rstrip('.')}; {LOGLIK_ADVICE}" for item in items if item]


def sampling_warnings(sampling: dict[str, Any] | None) -> list[str]:
    """Chains that sampling.json says are not at equilibrium, and a plain-Gibbs run that
    disagrees with tempering."""
    if sampling is None:
        return []
    out = []
    mode = sampling.get("mode", "equilibrium")
    not_eq = sampling.get("not_equilibrated")
    if not_eq is None:
        not_eq = mode == "equilibrium" and sampling.get("equilibrated") is False
    if not_eq:
        detail = sampling.get("warning") or (f"chains not equilibrated after "
                                             f"{sampling.get('sweeps', '?')} sweeps")
        out.append(f"sample: SAMPLES NOT AT EQUILIBRIUM: {detail}; {SAMPLE_ADVICE}")
    disagreement = sampling.get("gibbs_vs_tempering_warning")
    if disagreement:
        advice = ("the samples written are the tempering ones; keep a tempering method for this "
                  "model" if sampling.get("method") in ("pt", "ptt") else
                  "rerun sample with sample.method: ptt")
        out.append(f"sample: {str(disagreement).rstrip('.')}; {advice}")
    return out


def checkpoint_warnings(model_path: Path | None, loglik: dict[str, Any] | None,
                        sampling: dict[str, Any] | None) -> list[str]:
    """A log Z or samples of an earlier checkpoint than the last of model.h5."""
    if model_path is None:
        return []
    complete, _ = checkpoint_groups(model_path)
    out = []
    last = complete[-1] if complete else None
    for stage, doc, key in (("loglik", loglik, "checkpoint"), ("sample", sampling,
                                                                  "model_update")):
        used = doc.get(key) if doc is not None else None
        if isinstance(used, int) and last is not None and used != last:
            out.append(f"{stage}: computed at checkpoint update_{used}, but the model's last "
                       f"is update_{last}; rerun {stage} on the final model")
    return out


def checkpoint_groups(path: Path) -> tuple[list[int], list[int]]:
    """(complete, incomplete) update numbers of the `update_{n}` groups of an archive, sorted;
    a complete one holds params/weight_matrix, vbias and hbias."""
    import h5py

    complete, incomplete = [], []
    with h5py.File(path, "r") as f:
        for key in f:
            suffix = key.removeprefix("update_")
            if key == suffix or not suffix.isdigit():
                continue
            group = f.get(key)
            params = group.get("params") if isinstance(group, h5py.Group) else None
            full = isinstance(params, h5py.Group) and all(
                name in params for name in ("weight_matrix", "vbias", "hbias"))
            (complete if full else incomplete).append(int(suffix))
    return sorted(complete), sorted(incomplete)
