"""The loglik stage: archive in, loglik.json and the trajectory CSV out, checked against
exact enumeration; failures of AIS must show up as warnings."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rbmflow import ALPHABET
from rbmflow.cli import main
from rbmflow.data import synthetic
from rbmflow.data.dataset import EncodedAlignment, load_encoded, save_encoded
from rbmflow.errors import RbmflowError
from rbmflow.evaluation.loglik import (
    TRAJECTORY_COLUMNS,
    Checkpoint,
    LoglikSettings,
    check_estimates,
    choose_log_z,
    estimate,
    model_samples,
    run_stage,
)
from rbmflow.model import archive
from rbmflow.model import partition as P
from rbmflow.model.rbm import PottsRBM
from rbmflow.training.train import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _alignment(codes: torch.Tensor, alphabet: str, seed: int = 0) -> EncodedAlignment:
    """Codes (M, L) with random weights in [0.5, 1] and a 75/25 train/test split."""
    rng = np.random.default_rng(seed)
    m, length = codes.shape
    return EncodedAlignment(
        codes=codes.numpy().astype(np.uint8),
        weights=rng.uniform(0.5, 1.0, m).astype(np.float32),
        split=(rng.random(m) < 0.25).astype(np.uint8),
        names=np.array([f"s{i}" for i in range(m)]),
        columns=np.arange(length), alphabet=alphabet)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, EncodedAlignment]:
    """A short PCD training (Nh = 7, L = 11, q = 5) on samples of a known RBM."""
    root = tmp_path_factory.mktemp("trained")
    g = torch.Generator().manual_seed(7)
    teacher = synthetic.random_structured_rbm(11, 5, 3, coupling=3.0, activation=0.35, generator=g)
    data = _alignment(P.sample_exact(teacher, 1500, g), ALPHABET[:5])
    save_encoded(root / "alignment.npz", data)
    settings = TrainSettings(hidden=7, updates=200, chains=300, batch_size=300, gibbs_steps=5,
                             learning_rate=0.3, checkpoints=7, log_every=40, seed=3,
                             equilibrium_chains="never", optimizer="sgd")
    train(data.subset(0), root / "model.h5", root / "train_log.csv", settings,
          progress=False)
    return root / "model.h5", root / "alignment.npz", data


def _weighted_loglik(model: PottsRBM, data: EncodedAlignment, part: int, log_z: float) -> float:
    sub = data.subset(part)
    w = torch.from_numpy(sub.weights).double()
    neg_f = -model.free_energy(sub.codes_tensor()).double()
    return float((w * neg_f).sum() / w.sum()) - log_z


def test_trajectory_ais_along_real_training_matches_exact(trained, tmp_path):
    model_path, data_path, data = trained
    updates = archive.list_updates(model_path)
    assert len(updates) >= 5
    settings = LoglikSettings(methods=("trajectory",), chains=300, trajectory_steps=600,
                              trajectory_betas=200, seed=1)
    doc = run_stage(model_path, data_path, tmp_path / "loglik.json", settings,
                    trajectory_csv=tmp_path / "trajectory.csv")
    with open(tmp_path / "trajectory.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == TRAJECTORY_COLUMNS
    assert [int(r["update"]) for r in rows] == updates
    for row in rows:
        model = archive.load_rbm(model_path, int(row["update"]), dtype=torch.float64)
        exact = P.log_partition_exact(model)
        error = abs(float(row["log_z"]) - exact)
        assert error <= max(3 * float(row["log_z_std"]), 0.02) and error < 0.1
        assert float(row["loglik_test"]) == pytest.approx(
            _weighted_loglik(model, data, 1, float(row["log_z"])), abs=1e-4)
    # Training raised the likelihood of the held-out data.
    assert float(rows[-1]["loglik_test"]) > float(rows[0]["loglik_test"]) + 0.5
    assert doc["method"] == "trajectory" and doc["log_z"] == pytest.approx(
        float(rows[-1]["log_z"]), abs=1e-5)


def test_cli_writes_loglik_json_with_exact_values(trained, tmp_path):
    model_path, data_path, data = trained
    out = tmp_path / "loglik.json"
    csv_path = tmp_path / "trajectory.csv"
    code = main(["loglik", str(model_path), str(data_path), "--out", str(out),
                 "--trajectory-csv", str(csv_path), "--method", "exact,ais,reverse",
                 "--betas", "300", "--chains", "200", "--repeats", "2", "--seed", "5",
                 "--device", "cpu"])
    assert code == 0
    doc = json.loads(out.read_text())
    for key in ("log_z", "log_z_std", "method", "n_betas", "n_chains", "ess", "loglik_train",
                "loglik_test", "log_z_exact", "log_z_forward", "log_z_reverse", "warning",
                "warnings", "provenance"):
        assert key in doc
    model = archive.load_rbm(model_path, dtype=torch.float64)
    exact = P.log_partition_exact(model)
    assert doc["method"] == "exact" and doc["log_z"] == pytest.approx(exact, abs=1e-3)
    assert doc["loglik_train"] == pytest.approx(_weighted_loglik(model, data, 0, exact), abs=1e-3)
    assert doc["loglik_test"] == pytest.approx(_weighted_loglik(model, data, 1, exact), abs=1e-3)
    for key in ("log_z_forward", "log_z_reverse"):
        assert abs(doc[key] - exact) < 0.1
    assert doc["warnings"] == [] and doc["warning"] is None
    assert doc["provenance"]["format_version"] >= 1
    assert set(doc["provenance"]["inputs"]) == {"model", "alignment"}
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert {r["method"] for r in rows} == {"exact"}


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    code = main(["loglik", str(tmp_path / "absent.h5"), str(tmp_path / "absent.npz"),
                 "--out", str(tmp_path / "x.json")])
    assert code == 1
    assert "absent.h5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["loglik", "m.h5", "d.npz", "--out", "x.json", "--method", "magic"])


def test_settings_resolve_auto_and_refuse_bad_values():
    s = LoglikSettings()
    assert s.resolved_methods(16, 30) == ["exact"]
    assert s.resolved_methods(100, 30) == ["ais", "reverse", "trajectory"]
    assert s.resolved_methods(100, 1) == ["ais", "reverse"]
    assert LoglikSettings(methods=("reverse", "auto")).resolved_methods(100, 3) == [
        "reverse", "ais", "trajectory"]
    with pytest.raises(RbmflowError):
        LoglikSettings(methods=("magic",))
    with pytest.raises(RbmflowError):
        LoglikSettings(schedule="cubic")


def test_low_ess_is_warned():
    estimates = {"ais": {"log_z": 10.0, "log_z_std": 0.3, "ess": 4.2, "ess_fraction": 0.0042,
                         "n_chains_total": 1000}}
    warnings = check_estimates(estimates, tolerance=0.5, min_ess=0.1)
    assert len(warnings) == 1 and "effective sample size" in warnings[0]


@pytest.mark.parametrize("pseudocount", [0.01, 0.999])
def test_first_order_transition_is_right_or_visibly_wrong(pseudocount):
    """Planted patterns behind a barrier (Nh = 8, L = 40, q = 21). With the data-fitted base
    (pseudocount 0.01) or a nearly uniform one (0.999), the stage's log Z must be right, or
    its forward and reverse estimates must disagree by a lot, with a warning."""
    g = torch.Generator().manual_seed(0)
    model = synthetic.planted_pattern_rbm(40, 21, 8, coupling=5.0, threshold=0.3, generator=g)
    exact = P.log_partition_exact(model)
    data = _alignment(P.sample_exact(model, 600, g), ALPHABET)
    settings = LoglikSettings(methods=("ais", "reverse"), betas=400, chains=150,
                              equilibration_sweeps=20, pseudocount=pseudocount,
                              exact_max_hiddens=0, seed=2)
    result = estimate([Checkpoint(1, model.to(dtype=torch.float32))], data, settings).summary
    error = abs(result["log_z"] - exact)
    gap = abs(result["log_z_forward"] - result["log_z_reverse"])
    right = error < 0.2 + 3 * result["log_z_std"]
    flagged = bool(result["warnings"]) and gap > 0.5 and any(
        "disagree" in w for w in result["warnings"])
    assert right or flagged, (error, gap, result["warnings"])
    if pseudocount > 0.5:
        # A near-uniform base leaves the forward chains in the paramagnetic phase: the
        # failure happens, so it must be the flagged kind.
        assert error > 5 and flagged and gap > 5
    assert result["warning"] == (" | ".join(result["warnings"]) or None)
    assert math.isfinite(result["loglik_train"]) and math.isfinite(result["loglik_test"])


def test_nh_comes_from_the_weights_and_optional_hyperparameters_may_be_missing(trained,
                                                                               tmp_path):
    """An archive whose hyperparameters lack num_hiddens (and every other optional key), or
    state a wrong one, still runs: Nh is the weight matrix's last dimension (7 here, so the
    auto method is exact enumeration)."""
    import h5py

    model_path, data_path, _ = trained
    exact = P.log_partition_exact(archive.load_rbm(model_path, dtype=torch.float64))
    settings = LoglikSettings(seed=2)
    for name, edit in (("lacking.h5", "drop"), ("wrong.h5", "wrong"), ("none.h5", "group")):
        path = tmp_path / name
        path.write_bytes(model_path.read_bytes())
        with h5py.File(path, "a") as f:
            hyper = f["hyperparameters"]
            if edit == "group":
                del f["hyperparameters"]
            elif edit == "drop":
                for key in list(hyper):
                    if key not in ("batch_size", "gibbs_steps", "learning_rate", "L1", "L2"):
                        del hyper[key]
            else:
                del hyper["num_hiddens"]
                hyper["num_hiddens"] = 99
        meta = archive.read_metadata(path)
        assert (meta["num_visibles"], meta["num_states"], meta["num_hiddens"]) == (11, 5, 7)
        doc = run_stage(path, data_path, tmp_path / f"{name}.json", settings)
        assert doc["method"] == "exact" and doc["log_z"] == pytest.approx(exact, abs=1e-3)


def test_disagreement_is_measured_in_combined_standard_errors():
    """Two estimates 0.2 nats apart, each +-0.02, disagree (10 standard errors); 0.3 apart
    with +-0.15 each do not (1.4 standard errors); nor do a few hundredths of a nat."""
    floor = LoglikSettings().tolerance

    def warned(a: float, sa: float, b: float, sb: float) -> bool:
        estimates = {"ais": {"log_z": a, "log_z_std": sa},
                     "reverse": {"log_z": b, "log_z_std": sb}}
        return any("disagree" in w for w in check_estimates(estimates, floor, 0.1))

    assert warned(10.0, 0.02, 10.2, 0.02)
    assert not warned(10.0, 0.15, 10.3, 0.15)
    assert not warned(10.0, 0.0, 10.0 + floor / 2, 0.0)
    assert warned(10.0, 0.0, 10.0 + 2 * floor, 0.0)


def test_defaults_run_independent_repeats_and_report_the_log_weight_variance():
    """Default: the chains are split into independent repeats (same total, same cost), and
    every AIS estimate reports Var(log w): zero for a model that is the base itself, with
    hidden units that do not couple, positive for a coupled one."""
    defaults = LoglikSettings()
    assert defaults.repeats >= 3 and defaults.chains * defaults.repeats == 1000
    g = torch.Generator().manual_seed(4)
    coupled = synthetic.random_structured_rbm(13, 4, 3, coupling=2.0, activation=0.35, generator=g)
    data = _alignment(P.sample_exact(coupled, 400, g), ALPHABET[:4])
    train = data.subset(0)
    base = P.IndependentSites.from_codes(train.codes_tensor(), 4,
                                         train.weights_tensor(dtype=torch.float64),
                                         defaults.pseudocount)
    uncoupled = PottsRBM(torch.zeros(13, 4, 3), base.fields.float(), torch.zeros(3))
    settings = LoglikSettings(methods=("ais", "reverse"), betas=50, chains=40, repeats=5,
                              exact_max_hiddens=0, seed=1)
    variances = {}
    for name, model in (("uncoupled", uncoupled), ("coupled", coupled)):
        summary = estimate([Checkpoint(1, model)], data, settings).summary
        for method in ("ais", "reverse"):
            est = summary["estimates"][method]
            assert len(est["repeat_log_z"]) == 5
            variances[name, method] = est["log_w_var"]
    assert max(variances["uncoupled", m] for m in ("ais", "reverse")) < 1e-8
    assert min(variances["coupled", m] for m in ("ais", "reverse")) > 1e-3


@pytest.mark.slow
def test_reverse_ais_from_tempering_samples_bounds_log_z_where_stuck_starts_do_not():
    """Planted patterns behind a first-order transition (L = 20, q = 5, Nh = 3), with
    training sequences that are not the model's equilibrium (uniformly random: the
    paramagnetic phase, where Gibbs chains stay). Today's start, those sequences + 200
    sweeps, puts reverse AIS about 8 nats BELOW log Z (no upper bound). Trajectory tempering
    from the same sequences, over checkpoints whose couplings grow before their thresholds
    (as in training), gives samples from which reverse AIS bounds log Z from above, within
    its error."""
    g = torch.Generator().manual_seed(0)
    model = synthetic.planted_pattern_rbm(20, 5, 3, coupling=4.0, threshold=0.5,
                                  generator=g).to(dtype=torch.float32)
    exact = P.log_partition_exact(model)
    base = P.IndependentSites.uniform(20, 5)
    chains = 300
    starts = torch.randint(0, 5, (chains, 20), generator=g)
    stuck = model.gibbs(starts, 200, 1.0, g)
    from_stuck = P.reverse_ais_log_partition(model, base, stuck, n_betas=400, generator=g)
    assert from_stuck.log_z < exact - 5.0
    checkpoints = [Checkpoint(k, PottsRBM(t * model.weight_matrix, model.vbias.clone(),
                                          t * t * model.hbias))
                   for k, t in enumerate(torch.linspace(0, 1, 10).tolist())]
    samples, how = model_samples(model, checkpoints, chains, 600, g, exact_max_hiddens=0,
                                 starts=starts)
    assert how["method"] == "ptt" and min(how["swap_rates"]) > 0.2
    result = P.reverse_ais_log_partition(model, base, samples, n_betas=400, generator=g)
    assert result.log_z > exact - 3 * result.log_z_std - 0.05
    assert result.log_z < exact + max(3 * result.log_z_std, 0.2)


def test_log_z_is_the_trajectory_estimate_when_there_are_checkpoints(trained, tmp_path):
    """auto with Nh above the exact limit: forward, reverse and trajectory AIS run, and the
    reported log_z is trajectory AIS, equal to the last row of the trajectory table; with a
    single checkpoint loglik.json says why there is no trajectory estimate."""
    model_path, data_path, _ = trained
    settings = LoglikSettings(chains=100, betas=200, trajectory_steps=300,
                              trajectory_betas=100, equilibration_sweeps=40,
                              exact_max_hiddens=0, seed=1)
    doc = run_stage(model_path, data_path, tmp_path / "loglik.json", settings,
                    trajectory_csv=tmp_path / "trajectory.csv")
    with open(tmp_path / "trajectory.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert doc["method"] == "trajectory" and "last row" in doc["log_z_reason"]
    assert doc["log_z"] == pytest.approx(float(rows[-1]["log_z"]), abs=1e-5)
    assert doc["estimates"]["reverse"]["model_samples"].startswith("ptt over")
    single = LoglikSettings(methods=("ais", "reverse"), chains=100, betas=200,
                            equilibration_sweeps=40, exact_max_hiddens=0, seed=1)
    checkpoint = Checkpoint(1, archive.load_rbm(model_path))
    data = load_encoded(data_path)
    summary = estimate([checkpoint], data, single).summary
    assert summary["method"] == "ais" and "one checkpoint" in summary["log_z_reason"]
    assert summary["estimates"]["reverse"]["model_samples"].startswith("pt over")


# -- annealing sized for its error, diagnostics behind the reported log Z -------------------

def test_annealing_sized_from_the_pilot_reaches_the_target_error_at_a_fraction_of_the_cost():
    """A coupled model with exact log Z (Nh = 9, L = 17, q = 4): forward AIS sized for
    0.05 nats uses far fewer temperatures and chains than the maxima, reports what it spent,
    and lands within 3 of its standard errors (about the target) of the exact value."""
    g = torch.Generator().manual_seed(5)
    model = synthetic.random_structured_rbm(17, 4, 9, coupling=1.5, activation=0.35,
                                            generator=g)
    exact = P.log_partition_exact(model)
    data = _alignment(P.sample_exact(model, 600, g), ALPHABET[:4])
    settings = LoglikSettings(methods=("ais",), betas=3000, chains=400, repeats=5,
                              exact_max_hiddens=0, seed=3, target_std=0.05)
    summary = estimate([Checkpoint(1, model.to(dtype=torch.float32))], data, settings).summary
    est = summary["estimates"]["ais"]
    spent = summary["spent"]["per_method"]["ais"]
    assert spent["resolution"] < 1000 and spent["chains_per_repeat"] <= 400
    assert spent["chain_steps"] < 0.2 * 3000 * 400 * 5
    assert spent["sized_from_pilot"]["pilot_log_w_var"] > 0
    assert est["log_z_std"] < 0.1
    assert abs(est["log_z"] - exact) < 3 * est["log_z_std"] + 0.02


def test_reported_log_z_follows_the_diagnostics():
    """Trajectory AIS is reported only when its ESS is adequate and it agrees with the
    reliable forward/reverse estimates; loglik.json says why otherwise."""
    good = {"log_z": 10.0, "log_z_std": 0.02, "ess_fraction": 0.8}
    tiny = {"log_z": 10.0, "log_z_std": 0.02, "ess_fraction": 0.01}
    far = {"log_z": 11.0, "log_z_std": 0.02, "ess_fraction": 0.8}
    methods = ["ais", "reverse", "trajectory"]
    assert LoglikSettings().min_ess == 0.1
    assert choose_log_z({"ais": good, "reverse": good, "trajectory": good}, methods, 5)[0] \
        == "trajectory"
    method, why = choose_log_z({"ais": good, "reverse": good, "trajectory": tiny}, methods, 5)
    assert method == "ais" and "effective sample size" in why
    method, why = choose_log_z({"ais": good, "reverse": good, "trajectory": far}, methods, 5)
    assert method == "ais" and "disagrees with ais and reverse" in why
    method, why = choose_log_z({"ais": tiny, "reverse": good, "trajectory": far}, methods, 5)
    assert method == "reverse" and "disagrees with reverse" in why


def test_bracket_hint_only_when_reverse_is_above_forward():
    def messages(forward: float, reverse: float) -> str:
        return " ".join(check_estimates(
            {"ais": {"log_z": forward, "log_z_std": 0.01},
             "reverse": {"log_z": reverse, "log_z_std": 0.01}}, 0.05, 0.1))

    assert "lies between them" in messages(10.0, 11.0)
    below = messages(11.0, 10.0)
    assert "disagree" in below and "lies between them" not in below
    assert "do not bracket" in below


def test_reverse_repeats_start_from_their_own_sequences():
    """The repeats of reverse AIS come from separate tempering runs whose chains start from
    separate rows of the starts (no row shared between repeats): with no sweep, each repeat
    returns exactly its own rows."""
    g = torch.Generator().manual_seed(1)
    model = synthetic.random_structured_rbm(7, 3, 4, coupling=1.0, activation=0.3,
                                            generator=g).to(dtype=torch.float32)
    checkpoints = [Checkpoint(0, model), Checkpoint(1, model)]
    starts = torch.stack([torch.tensor([(k // 3**i) % 3 for i in range(7)])
                          for k in range(15)])
    samples, how = model_samples(model, checkpoints, 15, 0, g, exact_max_hiddens=0,
                                 starts=starts, repeats=3)
    assert how["runs"] == 3
    assert torch.equal(samples, starts)
    assert len({tuple(row.tolist()) for row in samples}) == 15


def test_loglik_starts_reverse_ais_from_the_sample_stage(trained, tmp_path):
    """Equilibrium samples of the evaluated checkpoint (sampling.json) replace the reverse
    run's own tempering; samples that are not (beta != 1) are refused with the reason."""
    model_path, data_path, data = trained
    model = archive.load_rbm(model_path)
    update = archive.list_updates(model_path)[-1]
    codes = P.sample_exact(model, 400, torch.Generator().manual_seed(3))
    fasta = tmp_path / "samples.fasta"
    fasta.write_text("".join(f">s{n}\n{''.join(data.alphabet[int(a)] for a in row)}\n"
                             for n, row in enumerate(codes)))
    info = {"equilibrated": True, "mode": "equilibrium", "beta": 1.0, "model_update": update}
    settings = LoglikSettings(methods=("reverse",), chains=60, betas=300, exact_max_hiddens=0,
                              seed=2)
    for beta, used in ((1.0, True), (0.5, False)):
        (tmp_path / "sampling.json").write_text(json.dumps(info | {"beta": beta}))
        doc = run_stage(model_path, data_path, tmp_path / "loglik.json", settings,
                        samples=fasta, samples_info=tmp_path / "sampling.json")
        how = doc["estimates"]["reverse"]["model_samples"]
        assert ("samples of the sample stage" in how) is used
        assert ("not beta 1" in doc["stage_samples"]) is not used
        reused = doc["reused"]
        assert (reused["used_for"] == "reverse AIS starts") is used
        spent = doc["estimates"]["reverse"]["spent"]
        assert reused["count"] == (spent["chains_per_repeat"] * spent["repeats"] if used else 0)
        assert used or "not beta 1" in reused["reason"]
        assert doc["estimates"]["reverse"]["spent"]["equilibration_sweeps"] == (
            0 if used else settings.equilibration_sweeps)
    exact = P.log_partition_exact(model.to(dtype=torch.float64))
    assert abs(doc["log_z"] - exact) < 3 * doc["log_z_std"] + 0.1
