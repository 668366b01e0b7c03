"""`rbmflow fetch`: locate or download a family's alignment and write source.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from rbmflow.cli import existing
from rbmflow.data.fetch import ALIGNMENT_TYPES, DEFAULT_BASE_URL, RetryPolicy, run_stage
from rbmflow.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", required=True, help="family name (the config key)")
    parser.add_argument("--source", required=True,
                        help="'example:ww', 'pfam', or a path to a FASTA/A2M/Stockholm file "
                             "(.gz allowed), read in place")
    parser.add_argument("--outdir", required=True,
                        help="output directory; source.json is written there last")
    parser.add_argument("--accession", default=None,
                        help="Pfam accession for --source pfam (default: the family name)")
    parser.add_argument("--alignment", choices=ALIGNMENT_TYPES, default="full",
                        help="which Pfam alignment InterPro serves (default: full)")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help=f"InterPro API base URL or a mirror (default: {DEFAULT_BASE_URL})")
    parser.add_argument("--attempts", type=int, default=RetryPolicy.attempts,
                        help="download attempts before giving up (default: %(default)s)")
    parser.add_argument("--backoff", type=float, default=RetryPolicy.backoff_s,
                        help="seconds before the first retry, doubled after each "
                             "(default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=RetryPolicy.timeout_s,
                        help="seconds a connect or a read may block (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=RetryPolicy.deadline_s,
                        help="seconds the whole download may take, every attempt and wait "
                             "included (default: %(default)s)")
    parser.add_argument("--min-rate", type=float, default=RetryPolicy.min_rate_bps,
                        help="bytes per second under which a transfer is abandoned (and "
                             "retried); 0: no minimum (default: %(default)s)")
    parser.add_argument("--min-rate-window", type=float,
                        default=RetryPolicy.min_rate_window_s,
                        help="seconds over which --min-rate is measured (default: %(default)s)")


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs): a local --source may not be the source.json written."""
    return ({"--source": existing(args.source)},
            {"--outdir/source.json": Path(args.outdir) / "source.json"})


def run(args: argparse.Namespace) -> None:
    if (args.attempts < 1 or args.timeout <= 0 or args.backoff < 0 or args.deadline <= 0
            or args.min_rate < 0 or args.min_rate_window <= 0):
        raise InputError("need --attempts >= 1, --timeout > 0, --deadline > 0, "
                         "--backoff >= 0, --min-rate >= 0 and --min-rate-window > 0")
    policy = RetryPolicy(attempts=args.attempts, backoff_s=args.backoff, timeout_s=args.timeout,
                         deadline_s=args.deadline, min_rate_bps=args.min_rate,
                         min_rate_window_s=args.min_rate_window)
    record = run_stage(args.family, args.source, args.outdir, accession=args.accession,
                          alignment=args.alignment, base_url=args.base_url, policy=policy)
    print(f"{args.family}: {record['alignment_path']} ({record['bytes']} bytes, "
          f"sha256 {record['sha256'][:12]}...)")
