"""Settings of the sample stage and the choices they resolve: the mode (equilibrium or rdm)
and the sampler (plain Gibbs, parallel tempering in beta, or parallel trajectory tempering
over the training checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rbmflow.sampling.mixing import Criteria

MODES = ("auto", "equilibrium", "rdm")
METHODS = ("auto", "gibbs", "pt", "ptt")


@dataclass(frozen=True)
class SamplingSettings:
    """What the sample stage does.

    chains: number of random-start chains (the samples); sweeps: sweeps to run (in rdm mode,
    the model's training gibbs_steps replace it); beta: inverse temperature; data_chains:
    chains started from training sequences (None: as many as `chains`, at most the training
    set; 0: no such set); auto_extend: run on until the chains look equilibrated or
    max_sweeps is reached (plain Gibbs: doubling the sweeps; tempering: segments, see
    `tempered`); record_every: also record every that many sweeps (0: only the
    log-spaced record times).
    """

    chains: int = 5000
    sweeps: int = 1000
    beta: float = 1.0
    seed: int = 0
    mode: str = "auto"
    record_every: int = 0
    auto_extend: bool = True
    max_sweeps: int = 8000
    data_chains: int | None = None
    criteria: Criteria = field(default_factory=Criteria)
    method: str = "auto"
    swap_floor: float = 0.3
    min_swap_rate: float = 0.1
    max_levels: int = 32
    pt_levels: int = 8
    reference_chains: int = 1000
    directions: int = 3
    rhat_max: float = 1.1

    def __post_init__(self) -> None:
        if self.chains < 2:
            raise ValueError("the equilibrium tests need at least 2 chains")
        if self.data_chains == 1:
            raise ValueError("data_chains must be 0 (none) or at least 2")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.reference_chains < 0 or self.reference_chains == 1:
            raise ValueError("reference_chains must be 0 (none) or at least 2")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["criteria"] = self.criteria.as_dict()
        return out


@dataclass(frozen=True)
class ModeChoice:
    """The resolved sampling mode: `equilibrium` or `rdm`, its sweeps and why."""

    mode: str
    sweeps: int
    reason: str


def choose_mode(requested: str, sweeps: int, metadata: dict[str, Any] | None) -> ModeChoice:
    """Resolve `auto` from the model's training metadata (keys `method`, `gibbs_steps`).

    auto: a model trained with Rdm-k is sampled with k sweeps from random; any other model at
    equilibrium with `sweeps`. rdm: needs gibbs_steps in the metadata. equilibrium: as asked.
    """
    if requested not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {requested!r}")
    metadata = metadata or {}
    method = str(metadata.get("method", "pcd")).lower()
    if requested == "equilibrium" or (requested == "auto" and method != "rdm"):
        why = "requested" if requested == "equilibrium" else f"model trained with {method}"
        return ModeChoice("equilibrium", sweeps, f"{why}: sampled at equilibrium")
    steps = metadata.get("gibbs_steps")
    if steps is None or int(steps) < 1:
        raise ValueError("rdm sampling needs the model's training gibbs_steps in its metadata")
    steps = int(steps)
    why = "requested" if requested == "rdm" else "model trained with rdm"
    return ModeChoice("rdm", steps, f"{why}-{steps}: {steps} sweeps from uniformly random "
                      "sequences, as in training (reproduces the data out of equilibrium)")




def choose_method(requested: str, num_checkpoints: int) -> tuple[str, str]:
    """Resolve `auto`: ptt when the archive holds at least 2 checkpoints, else pt.

    Returns (method, reason). Asking for ptt with fewer than 2 checkpoints falls back to pt.
    """
    if requested not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {requested!r}")
    if requested in ("auto", "ptt"):
        if num_checkpoints >= 2:
            return "ptt", (f"{'requested' if requested == 'ptt' else 'auto'}: parallel "
                           f"trajectory tempering over the archive's {num_checkpoints} "
                           "checkpoints")
        return "pt", (f"{'ptt requested' if requested == 'ptt' else 'auto'}: the archive has "
                      f"{num_checkpoints} checkpoint(s), no trajectory; parallel tempering in "
                      "inverse temperature")
    if requested == "pt":
        return "pt", "requested: parallel tempering in inverse temperature"
    return "gibbs", "requested: plain block-Gibbs chains, checked against a tempering reference"


