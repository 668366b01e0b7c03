"""The sample stage: mode choice, record times, FASTA and sampling.json, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rbmflow.cli import main
from rbmflow.data.dataset import EncodedAlignment, save_encoded
from rbmflow.data.synthetic import planted_pattern_rbm
from rbmflow.model.archive import save_checkpoint
from rbmflow.model.partition import hidden_configurations, interpolate, sample_exact
from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.sample import (
    SamplingSettings,
    choose_method,
    choose_mode,
    fasta_records,
    record_times,
    run_sampling,
    run_stage,
)
from torch import Tensor

pytestmark = pytest.mark.usefixtures("one_thread")

L, Q, NH = 7, 5, 3
ALPHABET = "-ACDE"


def small_model(seed: int = 0, scale: float = 0.5) -> PottsRBM:
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(scale * torch.randn(L, Q, NH, generator=g),
                    torch.randn(L, Q, generator=g), 0.3 * torch.randn(NH, generator=g))


def write_inputs(tmp_path: Path, model: PottsRBM, method: str = "pcd",
                 gibbs_steps: int = 10) -> tuple[Path, Path]:
    model_path = tmp_path / "model.h5"
    hyper = {"batch_size": 13, "gibbs_steps": gibbs_steps, "learning_rate": 0.01, "L1": 0.0,
             "L2": 0.0, "seed": 0, "num_hiddens": NH, "num_visibles": model.num_visibles,
             "num_chains": 17}
    chains = torch.zeros(17, model.num_visibles, dtype=torch.long)
    save_checkpoint(model_path, model, chains, update=5,
                    time_s=1.0, rng_state=None, hyperparameters=hyper,
                    metadata={"method": method, "gibbs_steps": gibbs_steps,
                              "alphabet": ALPHABET})
    g = torch.Generator().manual_seed(1)
    length = model.num_visibles
    codes = model.gibbs(torch.zeros(211, length, dtype=torch.long), 30, 1.0, g).numpy()
    data = EncodedAlignment(
        codes=codes.astype(np.uint8), weights=np.ones(211, dtype=np.float32),
        split=(np.arange(211) % 5 == 0).astype(np.uint8),
        names=np.array([f"seq{m}" for m in range(211)]), columns=np.arange(length),
        alphabet=ALPHABET)
    data_path = tmp_path / "alignment.npz"
    save_encoded(data_path, data)
    return model_path, data_path


def read_fasta(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()
    assert len(lines) % 2 == 0
    return [(lines[k][1:], lines[k + 1]) for k in range(0, len(lines), 2)]


def test_record_times_are_log_spaced_and_end_at_the_total() -> None:
    assert record_times(20) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    assert record_times(1) == [1]
    assert record_times(13, every=5) == [1, 2, 3, 4, 5, 6, 8, 10, 12, 13]
    assert len(record_times(100_003)) < 40


def test_mode_choice_follows_the_training_method() -> None:
    rdm = choose_mode("auto", 1000, {"method": "rdm", "gibbs_steps": 23})
    assert (rdm.mode, rdm.sweeps) == ("rdm", 23)
    pcd = choose_mode("auto", 1000, {"method": "pcd", "gibbs_steps": 23})
    assert (pcd.mode, pcd.sweeps) == ("equilibrium", 1000)
    forced = choose_mode("equilibrium", 1000, {"method": "rdm", "gibbs_steps": 23})
    assert (forced.mode, forced.sweeps) == ("equilibrium", 1000)
    assert choose_mode("rdm", 1000, {"method": "pcd", "gibbs_steps": 3}).sweeps == 3
    with pytest.raises(ValueError):
        choose_mode("rdm", 1000, {"method": "pcd"})
    with pytest.raises(ValueError):
        choose_mode("annealed", 1000, {})


def test_fasta_records_use_the_alphabet_and_name_chain_and_sweep() -> None:
    text = fasta_records(torch.tensor([[0, 1, 4], [3, 2, 0]]), ALPHABET, sweep=9)
    assert text == ">sample_0 sweep=9 chain=0\n-AE\n>sample_1 sweep=9 chain=1\nDC-\n"


def test_samples_follow_the_exact_marginals_of_a_small_model() -> None:
    """Gibbs chains from random reproduce the exact site marginals (enumerated hiddens)."""
    model = small_model(scale=0.8)
    chains = 1201
    result = run_sampling(model, SamplingSettings(chains=chains, sweeps=24, seed=5,
                                                  auto_extend=False))
    hiddens = hidden_configurations(NH, dtype=torch.float32)  # (2^NH, NH)
    log_weight = (hiddens @ model.hbias) + torch.logsumexp(
        model.visible_logits(hiddens), dim=-1).sum(-1)
    p_h = torch.softmax(log_weight.double(), 0)
    exact = (p_h[:, None, None] * torch.softmax(model.visible_logits(hiddens).double(), -1)).sum(0)
    sampled = torch.nn.functional.one_hot(result.codes, Q).double().mean(0)
    tolerance = 4 * torch.sqrt(exact * (1 - exact) / chains) + 1e-3
    assert ((sampled - exact).abs() <= tolerance).all()


def test_sample_stage_writes_fasta_and_sampling_json(tmp_path: Path) -> None:
    model_path, data_path = write_inputs(tmp_path, small_model())
    out, info = tmp_path / "samples.fasta", tmp_path / "sampling.json"
    code = main(["sample", str(model_path), str(data_path), "--out", str(out), "--info",
                 str(info), "--chains", "101", "--sweeps", "40", "--seed", "3",
                 "--device", "cpu", "--auto-extend", "True", "--max-sweeps", "160",
                 "--method", "gibbs"])
    assert code == 0
    records = read_fasta(out)
    assert len(records) == 101
    for c, (name, seq) in enumerate(records):
        assert name == f"sample_{c} sweep=40 chain={c}"
        assert len(seq) == L and set(seq) <= set(ALPHABET)
    report = json.loads(info.read_text())
    assert report["mode"] == "equilibrium" and report["sweeps"] == 40
    assert report["n_samples"] == 101 and report["alphabet"] == ALPHABET
    assert report["auto_extend"] == [{"sweeps": 40, "equilibrated": True, "failed_checks": []}]
    assert report["equilibrated"] is True and report["warning"] is None
    assert report["not_equilibrated"] is False
    assert report["mixing_time"] is not None and report["mixing_time"] <= 20
    assert set(report["equilibrium"]["checks"]) == {
        "mixing_random", "mixing_data", "energy_random_vs_data", "overlap_random_vs_data",
        "pearson_random_vs_data", "mixing_time", "rhat", "autocorrelation",
        "tempering_reference"}
    # One checkpoint: the tempering reference is parallel tempering in beta.
    assert report["method"] == "gibbs" and report["tempering"]["method"] == "pt"
    assert len(report["swap_rates"]) == len(report["swap_pairs"]) >= 1
    assert report["gibbs_vs_tempering"]["passed"] is True
    traj = report["trajectories"]["random"]
    assert traj["sweep"] == [0] + record_times(40)
    assert len(traj["energy_mean"]) == len(traj["sweep"]) == len(traj["pearson_cij_train"])
    assert set(report["trajectories"]) == {"random", "data"}
    assert report["trajectories"]["data"]["sweep"] == traj["sweep"]
    meeting = report["equilibrium"]["energy_random_vs_data"]
    assert meeting["sweep"] == traj["sweep"] and meeting["energy_passed"][-1] is True
    assert report["mixing_time"] == max(report["equilibrium"]["decorrelation_time"],
                                        report["equilibrium"]["relaxation_time"])
    prov = report["provenance"]
    assert prov["format_version"] == report["format_version"] == 1
    assert set(prov["inputs"]) == {"model", "data"} and prov["seed"] == 3
    assert prov["settings"]["chains"] == 101


def test_sample_stage_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    model_path, data_path = write_inputs(tmp_path, small_model())
    runs = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        out = tmp_path / f"{name}.fasta"
        info = tmp_path / f"{name}.json"
        run_stage(model_path, data_path, out, info,
                  SamplingSettings(chains=31, sweeps=12, seed=seed,
                                   auto_extend=False), device="cpu")
        runs.append((out.read_text(), json.loads(info.read_text())))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1]["trajectories"] == runs[1][1]["trajectories"]
    assert runs[0][0] != runs[2][0]


def test_rdm_model_is_sampled_with_its_training_steps(tmp_path: Path) -> None:
    model_path, data_path = write_inputs(tmp_path, small_model(), method="rdm", gibbs_steps=7)
    out, info = tmp_path / "samples.fasta", tmp_path / "sampling.json"
    run_stage(model_path, data_path, out, info,
                 SamplingSettings(chains=29, sweeps=500, seed=0, auto_extend=True), device="cpu")
    report = json.loads(info.read_text())
    assert report["mode"] == "rdm" and report["sweeps"] == 7
    assert report["training_method"] == "rdm" and "rdm-7" in report["mode_reason"]
    assert report["equilibrium"]["checked"] is False and report["not_equilibrated"] is False
    assert set(report["trajectories"]) == {"random"}
    assert all(name.endswith("sweep=7 chain=" + name.split("chain=")[1])
               for name, _ in read_fasta(out))
    forced = tmp_path / "forced.json"
    run_stage(model_path, data_path, out, forced,
                 SamplingSettings(chains=29, sweeps=16, seed=0, mode="equilibrium",
                               auto_extend=False), device="cpu")
    assert json.loads(forced.read_text())["sweeps"] == 16


def test_unmixed_chains_still_write_samples_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    strength = 3.0
    model = PottsRBM(torch.zeros(L, Q, NH), torch.zeros(L, Q), torch.zeros(NH))
    sites = torch.arange(L)
    model.weight_matrix[sites, sites % Q, 0] = strength
    model.weight_matrix[sites, (sites + 2) % Q, 0] = -strength
    model.vbias[sites, (sites + 2) % Q] = strength
    model_path, data_path = write_inputs(tmp_path, model)
    out, info = tmp_path / "samples.fasta", tmp_path / "sampling.json"
    with caplog.at_level("WARNING"):
        run_stage(model_path, data_path, out, info,
                  SamplingSettings(chains=151, sweeps=32, seed=0, method="gibbs",
                                   auto_extend=False), device="cpu")
    report = json.loads(info.read_text())
    assert report["equilibrated"] is False and report["not_equilibrated"] is True
    assert "mixing_random" in report["equilibrium"]["failed_checks"]
    assert "do not look equilibrated" in report["warning"]
    assert any(r.levelname == "WARNING" and "equilibrated" in r.getMessage()
               for r in caplog.records)
    assert len(read_fasta(out)) == 151


def test_mismatched_alignment_is_an_input_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model_path, _ = write_inputs(tmp_path, small_model())
    other = PottsRBM(torch.zeros(L + 2, Q, NH), torch.zeros(L + 2, Q), torch.zeros(NH))
    _, data_path = write_inputs(tmp_path / "other", other)
    code = main(["sample", str(model_path), str(data_path), "--out", str(tmp_path / "s.fa"),
                 "--info", str(tmp_path / "s.json"), "--device", "cpu"])
    assert code == 1
    assert "L=9" in capsys.readouterr().err
    assert not (tmp_path / "s.fa").exists()


# -- tempering in the stage: a multimodal model whose modes plain Gibbs does not cross ------

PLANTED_ALPHABET = "-AC"


def planted_archive(tmp_path: Path, checkpoints: int) -> tuple[Path, Path, PottsRBM, Tensor]:
    """An archive whose checkpoints grow three planted patterns from nothing, as a training
    run would, and an alignment of exact samples of the last one.

    The deepest mode (strongest couplings) is the heaviest at equilibrium but the hardest to
    enter from random sequences, so plain Gibbs from random over-fills the shallow ones.
    """
    g = torch.Generator().manual_seed(0)
    target = planted_pattern_rbm(11, 3, 3, coupling=6.0, threshold=0.6, generator=g)
    depth = torch.tensor([1.2, 1.0, 0.9], dtype=torch.float64)
    target.weight_matrix *= depth
    target.hbias *= depth
    target.hbias += torch.tensor([0.0, 6.4, 6.1], dtype=torch.float64)
    target = target.to(dtype=torch.float32)
    zero = PottsRBM(*(torch.zeros_like(t) for t in target.tensors()))
    model_path = tmp_path / "model.h5"
    hyper = {"batch_size": 13, "gibbs_steps": 10, "learning_rate": 0.01, "L1": 0.0,
             "L2": 0.0, "seed": 0, "num_hiddens": 3, "num_visibles": 11, "num_chains": 17}
    fractions = torch.linspace(0, 1, checkpoints).tolist() if checkpoints > 1 else [1.0]
    for k, t in enumerate(fractions):
        save_checkpoint(model_path, interpolate(zero, target, t),
                        torch.zeros(17, 11, dtype=torch.long), update=10 * k + 1, time_s=1.0,
                        rng_state=None, hyperparameters=hyper,
                        metadata={"method": "pcd", "gibbs_steps": 10,
                                  "alphabet": PLANTED_ALPHABET})
    codes = sample_exact(target, 307, g).numpy()
    data = EncodedAlignment(
        codes=codes.astype(np.uint8), weights=np.ones(307, dtype=np.float32),
        split=(np.arange(307) % 5 == 0).astype(np.uint8),
        names=np.array([f"seq{m}" for m in range(307)]), columns=np.arange(11),
        alphabet=PLANTED_ALPHABET)
    data_path = tmp_path / "alignment.npz"
    save_encoded(data_path, data)
    return model_path, data_path, target, target.weight_matrix.argmax(1).T


def mode_weights(codes: Tensor, patterns: Tensor) -> Tensor:
    overlaps = (codes[:, None, :] == patterns[None]).double().mean(-1)
    best = torch.where(overlaps.max(1).values > 0.6, overlaps.argmax(1),
                       torch.full((codes.shape[0],), patterns.shape[0]))
    return torch.bincount(best, minlength=patterns.shape[0] + 1).double() / codes.shape[0]


def test_ptt_stage_samples_the_modes_that_plain_gibbs_misses(tmp_path: Path) -> None:
    model_path, data_path, target, patterns = planted_archive(tmp_path, 8)
    out, info = tmp_path / "samples.fasta", tmp_path / "sampling.json"
    settings = SamplingSettings(chains=301, sweeps=400, seed=1, auto_extend=False,
                                reference_chains=301, data_chains=0)
    result = run_stage(model_path, data_path, out, info, settings, device="cpu")
    report = json.loads(info.read_text())
    assert report["method"] == "ptt" and "8 checkpoints" in report["method_reason"]
    assert report["tempering"]["levels"][0] == "update_1"
    assert report["tempering"]["levels"][-1] == "update_71"
    assert len(report["swap_rates"]) == len(report["tempering"]["levels"]) - 1
    assert min(report["swap_rates"]) > 0.1
    assert report["equilibrated"] is True
    exact = mode_weights(sample_exact(target, 20000, torch.Generator().manual_seed(2)),
                         patterns)
    sampled = mode_weights(result.codes, patterns)
    assert (sampled - exact).abs().max() < 0.05, (sampled, exact)
    # Plain Gibbs from random falls into the modes by basin size, not by weight.
    assert report["gibbs_vs_tempering"]["passed"] is False
    assert "plain Gibbs does not cross" in report["gibbs_vs_tempering_warning"]


def test_gibbs_is_never_called_equilibrated_against_a_disagreeing_reference(
        tmp_path: Path) -> None:
    model_path, data_path, _, _ = planted_archive(tmp_path, 8)
    out, info = tmp_path / "samples.fasta", tmp_path / "sampling.json"
    settings = SamplingSettings(chains=301, sweeps=400, seed=1, auto_extend=False,
                                reference_chains=301, data_chains=0, method="gibbs")
    run_stage(model_path, data_path, out, info, settings, device="cpu")
    report = json.loads(info.read_text())
    assert report["method"] == "gibbs" and report["tempering"]["method"] == "ptt"
    assert report["equilibrated"] is False and report["not_equilibrated"] is True
    assert "tempering_reference" in report["equilibrium"]["failed_checks"]
    assert "rhat" in report["equilibrium"]["failed_checks"]  # R-hat sees the modes too


def test_method_choice_follows_the_checkpoints() -> None:
    assert choose_method("auto", 5)[0] == "ptt"
    assert choose_method("auto", 1)[0] == "pt"
    assert choose_method("ptt", 1)[0] == "pt"
    assert choose_method("gibbs", 5)[0] == "gibbs"
    with pytest.raises(ValueError):
        choose_method("anneal", 5)


def exact_site_marginals(model: PottsRBM) -> Tensor:
    """p(v_i = a) of a small model by enumerating its hidden states; (L, q)."""
    hiddens = hidden_configurations(model.num_hiddens, dtype=model.dtype)
    logits = model.visible_logits(hiddens).double()
    log_weight = (hiddens.double() @ model.hbias.double()) + torch.logsumexp(logits, -1).sum(-1)
    p_h = torch.softmax(log_weight, 0)
    return (p_h[:, None, None] * torch.softmax(logits, -1)).sum(0)


@pytest.mark.parametrize("method", ["pt", "ptt"])
def test_tempering_samples_the_model_at_the_requested_beta(tmp_path: Path, method: str) -> None:
    """sample.beta scales every level of the ladder: the samples follow the exact site
    marginals of the model at beta = 0.4 (not those at beta = 1), and sampling.json records
    that beta."""
    model = small_model(seed=3, scale=1.5)
    model.vbias *= 3
    beta = 0.4
    model_path, data_path = write_inputs(tmp_path, model)
    out, info = tmp_path / "samples.fasta", tmp_path / "sampling.json"
    chains = 1201
    settings = SamplingSettings(chains=chains, sweeps=200, seed=2, beta=beta, method=method,
                                auto_extend=False, reference_chains=0)
    result = run_stage(model_path, data_path, out, info, settings, device="cpu")
    sampled = torch.nn.functional.one_hot(result.codes, Q).double().mean(0)
    hot = PottsRBM(*(beta * t for t in model.tensors()))
    exact = exact_site_marginals(hot)
    tolerance = 5 * torch.sqrt(exact * (1 - exact) / chains) + 2e-3
    assert ((sampled - exact).abs() <= tolerance).all()
    assert ((sampled - exact_site_marginals(model)).abs() > tolerance).any()
    assert json.loads(info.read_text())["beta"] == beta
