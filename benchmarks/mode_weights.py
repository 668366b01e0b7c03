"""The population shares of a genotype model, by annealed importance sampling (AIS).

Forward AIS from the independent-site model of the training rows to the model gives each
final chain an importance weight: the weighted chains are draws of the model, whatever the
barriers between its modes, and the weights correct for the proportions in which the chains
fell into the modes on the way (Neal 2001). The model's share of population k is then the
weighted fraction of final chains whose nearest labelled training row is of population k.
No Markov chain has to cross between modes, so these shares check the samplers' (the
sample stage's samples, the training's stored chains); the Kish effective sample size and
the spread over independent repeats say how far the estimate can be trusted.

    python benchmarks/mode_weights.py results/FAMILY RUN [--chains 1000 --repeats 4]

results/FAMILY is the results folder of a genotype family with `populations:`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rbmflow.data.dataset import load_encoded
from rbmflow.evaluation.genomes import nearest_labels, shares
from rbmflow.model import archive
from rbmflow.model.partition import IndependentSites, ais_log_partition
from rbmflow.report.genomes import genome_sets
from rbmflow.report.inputs import read_samples


def ais_shares(model, base: IndependentSites, reference: np.ndarray, labels: np.ndarray,
               chains: int, betas: int, repeats: int, seed: int) -> dict:
    """Weighted vote shares of the final AIS chains, per repeat and pooled, with the ESS."""
    g = torch.Generator().manual_seed(seed)
    result = ais_log_partition(model, base, n_chains=chains, n_betas=betas, repeats=repeats,
                               generator=g)
    votes = nearest_labels(result.final_codes.numpy().astype(np.uint8), reference, labels)
    names = sorted(set(labels.tolist()))
    log_w = result.log_weights.double()

    def weighted_shares(rows: slice) -> dict[str, float]:
        w = torch.softmax(log_w[rows], 0).numpy()
        return {k: float(w[votes[rows] == k].sum()) for k in names}

    per_repeat = [weighted_shares(slice(r * chains, (r + 1) * chains)) for r in range(repeats)]
    pooled = weighted_shares(slice(None))
    spread = {k: float(np.std([s[k] for s in per_repeat], ddof=1) / np.sqrt(repeats))
              for k in names}
    return {"shares": pooled, "standard_error": spread, "ess": result.ess,
            "chains": chains * repeats, "betas": betas, "log_z": result.log_z,
            "unweighted": shares(votes, names),
            "per_repeat": per_repeat}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("family", type=Path)
    p.add_argument("run")
    p.add_argument("--chains", type=int, default=1000, help="AIS chains per repeat")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--betas", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    data_path = a.family / "data" / "alignment.npz"
    data = load_encoded(data_path)
    run = a.family / a.run
    model = archive.load_rbm(run / "model.h5")
    length = data.codes.shape[1]
    sets = genome_sets(data_path, data, np.zeros((2, length), np.uint8))
    if sets is None or sets.train_populations is None:
        raise SystemExit(f"{data_path}: not a genotype family with populations")
    labelled = sets.train_populations != ""
    reference, labels = sets.train[labelled], sets.train_populations[labelled]
    base = IndependentSites.from_codes(torch.as_tensor(sets.train.astype(np.int64)),
                                       model.num_states)
    names = sorted(set(labels.tolist()))
    report = {"run": a.run, "train_labels": shares(labels, names),
              "ais": ais_shares(model, base, reference, labels, a.chains, a.betas, a.repeats,
                                a.seed)}
    fasta = run / "samples.fasta"
    stored = archive.load_chains(run / "model.h5").numpy().astype(np.uint8)
    for name, rows in (("sample stage", read_samples(fasta, data.alphabet, length)
                        if fasta.exists() else None), ("training chains", stored)):
        if rows is not None:
            report[name] = shares(nearest_labels(rows, reference, labels), names)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
