"""`rbmflow contacts`: effective couplings of a trained RBM, contact scores and exports.

    rbmflow contacts model.h5 --out contacts.csv [--alignment alignment.npz]
        [--structure FILE [--chain X]] [--export-dca params.dat] [--export-npz couplings.npz]

contacts.csv: i, j, score (1-based alignment columns, i < j, by descending score). Couplings
are averaged around the training sequences of --alignment (weighted), or around the model's
persistent chains when no alignment is given.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from rbmflow.couplings import METHODS
from rbmflow.errors import InputError

log = logging.getLogger("rbmflow.contacts")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model.h5")
    parser.add_argument("--out", type=Path, required=True, help="contacts.csv to write")
    parser.add_argument("--alignment", type=Path, default=None,
                        help="alignment.npz: its training sequences are the backgrounds "
                             "(default: the model's persistent chains)")
    parser.add_argument("--method", choices=METHODS, default="gaussian",
                        help="gaussian: large-N second differences (default); background: "
                             "exact second differences around sampled backgrounds; tubiana: "
                             "second-order expansion")
    parser.add_argument("--backgrounds", type=int, default=200,
                        help="backgrounds drawn for --method background (default 200)")
    parser.add_argument("--structure", type=Path, default=None,
                        help="distance table (i j score distance) or PDB/mmCIF file")
    parser.add_argument("--chain", default=None, help="chain of a PDB/mmCIF --structure")
    parser.add_argument("--ppv-json", type=Path, default=None,
                        help="write the PPVs against --structure to this JSON file")
    parser.add_argument("--export-dca", type=Path, default=None,
                        help="fields and couplings in adabmDCA's text format")
    parser.add_argument("--export-npz", type=Path, default=None,
                        help="fields, couplings and scores as npz")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> None:
    from rbmflow.archive import load_chains, load_rbm, read_metadata
    from rbmflow.contacts import (
        consensus_sequence,
        ppv_summary,
        predict_contacts,
        read_structure,
        write_adabmdca,
        write_contacts_csv,
        write_npz,
    )
    from rbmflow.dataset import TRAIN, load_encoded
    from rbmflow.provenance import write_json

    if args.backgrounds < 1:
        raise InputError("--backgrounds must be positive")
    if args.ppv_json is not None and args.structure is None:
        raise InputError("--ppv-json needs --structure")
    device = args.device
    model = load_rbm(args.model, device=device, dtype=torch.float64)
    alphabet = read_metadata(args.model).get("alphabet")
    if args.alignment is not None:
        try:
            data = load_encoded(args.alignment).subset(TRAIN)
        except ValueError as err:
            raise InputError(str(err)) from err
        if (data.length, data.num_states) != (model.num_visibles, model.num_states):
            raise InputError(f"{args.alignment}: L={data.length}, q={data.num_states}; the "
                             f"model has L={model.num_visibles}, q={model.num_states}")
        alphabet = data.alphabet
        backgrounds = data.codes_tensor(device)
        weights = data.weights_tensor(device, torch.float64)
    else:
        backgrounds, weights = load_chains(args.model, device), None
    if alphabet is None or len(alphabet) != model.num_states:
        raise InputError(f"{args.model}: the archive names no alphabet of {model.num_states} "
                         "letters; give --alignment")
    result = predict_contacts(model, backgrounds, weights, args.method, args.backgrounds,
                              args.seed)
    write_contacts_csv(args.out, result.ranked)
    log.info("wrote %s (%d pairs; method %s, %d backgrounds)", args.out, len(result.ranked),
             args.method, result.num_backgrounds)
    if args.export_dca is not None:
        write_adabmdca(args.export_dca, result.couplings, result.fields, alphabet)
        log.info("wrote %s", args.export_dca)
    if args.export_npz is not None:
        write_npz(args.export_npz, result.couplings, result.fields, alphabet, result.scores,
                  args.method)
        log.info("wrote %s", args.export_npz)
    if args.structure is not None:
        reference = None
        if args.chain is not None:
            codes = backgrounds.cpu().numpy()
            w = (weights.cpu().numpy() if weights is not None else
                 torch.ones(codes.shape[0]).numpy())
            reference = consensus_sequence(codes, w, alphabet)
        structure = read_structure(args.structure, model.num_visibles, args.chain, reference)
        summary = ppv_summary(result.scores, structure)
        log.info("PPV vs %s: %s", structure.source, json.dumps(summary))
        if args.ppv_json is not None:
            write_json(args.ppv_json, summary)
