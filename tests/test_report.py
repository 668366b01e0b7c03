"""The report stage renders for a tiny run: metrics.json, figures, a self-contained report.html."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rbmflow import ALPHABET
from rbmflow.cli import main
from rbmflow.data.dataset import EncodedAlignment, save_encoded
from rbmflow.errors import InputError
from rbmflow.evaluation.metrics import EvaluationSettings
from rbmflow.model import archive
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import sha256_file
from rbmflow.report import ReportInputs, read_samples, run_stage, summarize

L, NH, M_NATURAL, M_GENERATED = 11, 3, 67, 43
ROOT = Path(__file__).resolve().parents[1]


class _Page(HTMLParser):
    """Collects <img> attributes, warning boxes and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.warnings: list[str] = []
        self.text: list[str] = []
        self._in_warning = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        if tag == "div" and attributes.get("class") == "warning":
            self._in_warning = True
            self.warnings.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self._in_warning = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_warning:
            self.warnings[-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _write_fasta(path: Path, codes: np.ndarray) -> None:
    path.write_text("".join(f">sample_{c} sweep=100 chain={c}\n"
                            + "".join(ALPHABET[a] for a in row) + "\n"
                            for c, row in enumerate(codes)))


@pytest.fixture
def tiny_run(tmp_path: Path) -> dict[str, Path]:
    """A tiny family: alignment.npz, samples.fasta, sampling.json, loglik.json, train_log.csv,
    and model.h5 written with the archive module."""
    rng = np.random.default_rng(0)
    q = len(ALPHABET)
    motif = rng.integers(0, q, L)
    natural = np.where(rng.random((M_NATURAL, L)) < 0.7, motif, rng.integers(0, q, (M_NATURAL, L)))
    split = (np.arange(M_NATURAL) % 4 == 0).astype(np.uint8)
    weights = (rng.random(M_NATURAL) * 0.5 + 0.5).astype(np.float32)
    save_encoded(tmp_path / "alignment.npz", EncodedAlignment(
        natural.astype(np.uint8), weights, split, np.array([f"n{i}" for i in range(M_NATURAL)]),
        np.arange(L), ALPHABET, {"stage": "prepare"}))
    generated = np.where(rng.random((M_GENERATED, L)) < 0.6, motif,
                         rng.integers(0, q, (M_GENERATED, L)))
    generated[0] = natural[1]  # one exact copy of a training sequence
    _write_fasta(tmp_path / "samples.fasta", generated)
    model = PottsRBM(torch.randn(L, q, NH) * 0.2, torch.randn(L, q) * 0.2, torch.zeros(NH))
    archive.save_checkpoint(
        tmp_path / "model.h5", model, torch.randint(0, q, (5, L)), update=10, time_s=1.0,
        rng_state=None,
        hyperparameters={"batch_size": 7, "gibbs_steps": 3, "learning_rate": 0.01, "L1": 0.0,
                         "L2": 0.0, "seed": 0, "num_hiddens": NH, "num_chains": 5},
        metadata={"alphabet": ALPHABET, "family": "tiny", "method": "pcd"})
    made_by = {"inputs": {"model": {"path": "model.h5",
                                    "sha256": sha256_file(tmp_path / "model.h5")}}}
    sweeps = [1, 2, 4, 8, 16, 32, 64, 100]
    (tmp_path / "sampling.json").write_text(json.dumps({
        "mode": "equilibrium", "sweeps": 100, "equilibrated": False, "not_equilibrated": True,
        "warning": "chains do not look equilibrated after 100 sweeps", "mixing_time": None,
        "method": "ptt", "swap_rates": [0.61, 0.283, 0.47],
        "gibbs_vs_tempering": {"passed": False},
        "trajectories": {"random": {
            "sweep": sweeps, "energy_mean": [-float(np.log(t + 1)) for t in sweeps],
            "pearson_cij_train": [min(1.0, t / 50) for t in sweeps],
            "overlap_same": [0.5] * 8, "overlap_different": [0.3] * 7 + [None]}},
        "provenance": {"stage": "sample", **made_by}}))
    (tmp_path / "loglik.json").write_text(json.dumps({
        "log_z": 31.5, "log_z_std": 0.4, "loglik_train": -21.25, "loglik_test": -23.5,
        "method": "ais", "ess": 12.0, "warnings": ["effective sample size 12 is low"],
        "checkpoint": 10, "provenance": {"stage": "loglik", **made_by}}))
    with open(tmp_path / "train_log.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["update", "time_s", "learning_rate", "pearson_cij_train",
                         "pearson_cij_test", "free_energy_data", "free_energy_chains"])
        for u in (1, 10, 100, 1000):
            writer.writerow([u, 0.01 * u, 0.01, 1 - 1 / (1 + u), 0.9 - 1 / (1 + u), -u / 100,
                             -u / 90])
    paths = {name: tmp_path / name for name in ("alignment.npz", "samples.fasta",
                                                 "sampling.json", "loglik.json", "train_log.csv")}
    paths["model.h5"] = tmp_path / "model.h5"
    paths["generated"] = generated  # type: ignore[assignment]
    return paths


SETTINGS = EvaluationSettings(seed=0, triplets=17, nn_samples=29, pca_components=3)


def test_report_renders_with_every_figure_embedded(tiny_run: dict[str, Path],
                                                   tmp_path: Path) -> None:
    outdir = tmp_path / "results" / "tiny" / "default" / "report"
    inputs = ReportInputs(tiny_run["alignment.npz"], tiny_run["samples.fasta"],
                          tiny_run["sampling.json"], tiny_run["model.h5"],
                          tiny_run["train_log.csv"], tiny_run["loglik.json"], None)
    metrics = run_stage(inputs, outdir, SETTINGS, device="cpu")

    written = json.loads((outdir / "metrics.json").read_text())
    assert written["family"] == "tiny" and written["run"] == "default"
    for key in ("pearson_fi", "pearson_cij", "slope_cij", "pearson_cij_train_vs_test",
                "pearson_fi_train_vs_test", "loglik_train", "loglik_test", "n_generated", "pca",
                "pearson_cijk", "hamming_nn_median", "hamming_nn_median_test", "copy_fraction",
                "nnaa", "equilibrated", "provenance"):
        assert key in written, key
    assert written["n_generated"] == M_GENERATED
    assert written["loglik_test"] == -23.5
    assert written["copy_fraction"] == pytest.approx(1 / M_GENERATED)
    assert set(written["nnaa"]) >= {"AA_truth", "AA_syn", "AA"}
    assert written["equilibrated"] is False
    assert written["sampling_method"] == "ptt" and written["min_swap_rate"] == 0.283
    assert written["gibbs_agrees_with_tempering"] is False
    assert written["provenance"]["inputs"]["model"]["sha256"]
    assert written["energy"]["generated"]["mean"] == pytest.approx(metrics["energy"]["generated"]
                                                                   ["mean"])

    pngs = sorted(p.name for p in outdir.glob("*.png"))
    expected = {"site_frequencies", "correlations", "pca", "hamming", "energy", "logos",
                "training", "sampling", "hidden_units", "hidden_inputs"}
    assert pngs == sorted(f"{name}.png" for name in expected)
    page = _parse(outdir / "report.html")
    embedded = {img["data-file"]: img["src"] for img in page.images}
    assert sorted(embedded) == pngs
    for name, src in embedded.items():
        assert src is not None and src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (outdir / name).read_bytes()
    # nothing is fetched from elsewhere: the page opens without a server
    html_text = (outdir / "report.html").read_text()
    assert "http://" not in html_text.split("<h2>Settings")[0]
    # loud warnings: not at equilibrium, and the log-likelihood's own warning
    assert any("NOT AT EQUILIBRIUM" in w for w in page.warnings)
    assert any("effective sample size 12 is low" in w for w in page.warnings)
    text = " ".join(page.text)
    assert "loglik_trajectory" in text and "no log-likelihood trajectory CSV given" in text
    assert "0.61, 0.28, 0.47" in text  # the swap rates in the sampling section


def test_report_without_optional_inputs(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    outdir = tmp_path / "bare"
    metrics = run_stage(ReportInputs(tiny_run["alignment.npz"], tiny_run["samples.fasta"]),
                          outdir, SETTINGS, device="cpu", family="tiny", run="bare")
    assert metrics["loglik_test"] is None and metrics["energy"] is None
    assert metrics["warnings"] == []
    assert set(metrics["omitted_figures"]) == {"energy", "training", "loglik_trajectory",
                                               "sampling", "contacts_ppv", "contact_map",
                                               "hidden_units", "hidden_inputs"}
    page = _parse(outdir / "report.html")
    assert not page.warnings
    assert len(page.images) == 5
    text = " ".join(page.text)
    for reason in metrics["omitted_figures"].values():
        assert reason in text


def test_cli_report_and_summary(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    outdir = tmp_path / "results" / "tiny" / "a" / "report"
    code = main(["report", "--data", str(tiny_run["alignment.npz"]),
                 "--samples", str(tiny_run["samples.fasta"]),
                 "--loglik", str(tiny_run["loglik.json"]), "--outdir", str(outdir),
                 "--seed", "3", "--triplets", "5", "--nn-samples", "19",
                 "--pca-components", "2", "--device", "cpu"])
    assert code == 0
    runs = {"a": outdir / "metrics.json", "b": tmp_path / "b.json"}
    other = json.loads(runs["a"].read_text())
    runs["b"].write_text(json.dumps({**other, "run": "b", "pearson_cij": 0.5, "warnings": []}))
    assert json.loads(runs["a"].read_text())["settings"]["triplets"] == 5
    out = tmp_path / "results" / "summary.csv"
    assert main(["report", "--summary", str(runs["b"]), str(runs["a"]), "--out", str(out)]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["a", "b"]
    assert float(rows[0]["pearson_cij"]) == pytest.approx(
        json.loads(runs["a"].read_text())["pearson_cij"])
    assert float(rows[1]["pearson_cij"]) == 0.5
    assert "loglik: effective sample size 12" in rows[0]["warnings"] and not rows[1]["warnings"]
    page = _parse(out.with_suffix(".html"))
    assert "pearson_cij" in " ".join(page.text)
    frame = summarize([runs["a"]], tmp_path / "one.csv")
    assert len(frame) == 1
    # a missing input is one clean error, not a traceback
    assert main(["report", "--data", str(tmp_path / "nope.npz"), "--samples",
                 str(tiny_run["samples.fasta"]), "--outdir", str(tmp_path / "x")]) == 1


def test_read_samples_rejects_bad_records(tmp_path: Path) -> None:
    good = np.array([[0, 1, 2], [20, 19, 3]])
    _write_fasta(tmp_path / "ok.fasta", good)
    np.testing.assert_array_equal(read_samples(tmp_path / "ok.fasta", ALPHABET, 3), good)
    (tmp_path / "short.fasta").write_text(">a\nACD\n>b\nAC\n")
    with pytest.raises(InputError, match=r"short.fasta: record 2 \(b\) has length 2"):
        read_samples(tmp_path / "short.fasta", ALPHABET, 3)
    (tmp_path / "odd.fasta").write_text(">a\nACD\n>b\nAXD\n")
    with pytest.raises(InputError, match=r"record 2 \(b\) has symbols \['X'\]"):
        read_samples(tmp_path / "odd.fasta", ALPHABET, 3)
    (tmp_path / "empty.fasta").write_text("")
    with pytest.raises(InputError, match="no sequences"):
        read_samples(tmp_path / "empty.fasta", ALPHABET, 3)


def test_information_heights_known_answers() -> None:
    from rbmflow.report import information_heights

    q = len(ALPHABET)
    conserved = np.zeros((1, q))
    conserved[0, 4] = 1.0
    uniform = np.full((1, q), 1.0 / q)
    half = np.zeros((1, q))
    half[0, :2] = 0.5
    heights = information_heights(np.concatenate([conserved, uniform, half]))
    assert heights[0, 4] == pytest.approx(np.log2(q)) and heights[0].sum() == pytest.approx(
        np.log2(q))
    np.testing.assert_allclose(heights[1], 0.0, atol=1e-12)
    np.testing.assert_allclose(heights[2, :2], 0.5 * (np.log2(q) - 1.0))


def test_report_says_which_split_and_how_close_test_is_to_train(tiny_run: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    from rbmflow.data.dataset import load_encoded
    from rbmflow.data.prepare import identity_distribution

    data = load_encoded(tiny_run["alignment.npz"])
    identity = np.array([0.55, 0.6, 0.7, 0.75, 0.85])
    split = {"method": "cluster", "test_max_identity_to_train":
             identity_distribution(identity, 0.8)}
    save_encoded(tmp_path / "alignment.npz", dataclasses.replace(
        data, provenance={"stage": "prepare", "summary": {"split": split}}))
    outdir = tmp_path / "report"
    metrics = run_stage(ReportInputs(tmp_path / "alignment.npz", tiny_run["samples.fasta"],
                                       None, None, None, None, None), outdir, SETTINGS,
                          device="cpu")
    assert metrics["split"]["method"] == "cluster"
    text = " ".join(" ".join(_parse(outdir / "report.html").text).split())
    assert "Train/test split: cluster" in text
    assert "median 0.700" in text and "0.200 of them at or above 0.800" in text


def test_report_shows_the_mutation_heat_map(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "results" / "tiny" / "wt"
    wildtype = "".join(ALPHABET[a] for a in tiny_run["generated"][3])  # aligned, L letters
    code = main(["mutations", str(tiny_run["model.h5"]), str(tiny_run["alignment.npz"]),
                 "--wildtype", wildtype, "--first", "5", "--out", str(run_dir / "mutations.csv"),
                 "--device", "cpu", "--input", "aligned"])
    assert code == 0
    covered = sum(c != "-" for c in wildtype)
    outdir = run_dir / "report"
    metrics = run_stage(ReportInputs(tiny_run["alignment.npz"], tiny_run["samples.fasta"],
                                       mutations_heatmap=run_dir / "mutations.png",
                                       mutations_summary=run_dir / "mutations.json"),
                          outdir, SETTINGS, device="cpu")
    assert metrics["mutations"]["covered_positions"] == covered
    assert metrics["mutations"]["matched_columns"] == covered
    assert metrics["figures"]["mutations"] == "mutations.png"
    page = _parse(outdir / "report.html")
    embedded = {img["data-file"]: img["src"] for img in page.images}
    assert base64.b64decode(embedded["mutations.png"].split(",", 1)[1]) == \
        (run_dir / "mutations.png").read_bytes()
    assert f"{covered} / {covered}" in " ".join(page.text)


def _captions_named_by_rules() -> set[str]:
    """Caption files the Snakemake rules point at: literal paths, `report_figure("name")` and
    the REPORT_FIGURES list (both go through `captions/{name}.rst` in common.smk)."""
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    assert 'caption=f"../rbmflow/report/captions/{name}.rst"' in rules
    names = set(re.findall(r"\.\./rbmflow/report/captions/(\w+)\.rst", rules))
    names |= set(re.findall(r'report_figure\("(\w+)"\)', rules))
    listed = re.search(r"REPORT_FIGURES = \[(.*?)\]", rules, re.S)
    assert listed is not None
    return names | set(re.findall(r'"(\w+)"', listed.group(1)))


def test_every_figure_has_one_caption_file_and_every_caption_file_is_used(
        tiny_run: dict[str, Path], tmp_path: Path) -> None:
    from rbmflow.report import FIGURES, caption

    captions = ROOT / "workflow" / "rbmflow" / "report" / "captions"
    files = {p.stem for p in captions.glob("*.rst")}
    by_rules = _captions_named_by_rules()
    assert set(FIGURES) <= files, set(FIGURES) - files
    assert by_rules <= files, by_rules - files
    assert files == set(FIGURES) | by_rules, files - set(FIGURES) - by_rules
    for name in FIGURES:
        text = caption(name)
        assert len(text) > 40 and "{{" not in text and "``" not in text and "\n" not in text

    outdir = tmp_path / "report"
    metrics = run_stage(ReportInputs(tiny_run["alignment.npz"], tiny_run["samples.fasta"],
                                     tiny_run["sampling.json"]),
                        outdir, SETTINGS, device="cpu", family="tiny", run="r")
    drawn, omitted = set(metrics["figures"]), set(metrics["omitted_figures"])
    assert drawn | omitted <= set(FIGURES) and drawn
    text = " ".join(" ".join(_parse(outdir / "report.html").text).split())
    for name in drawn:
        assert caption(name) in text, name



def _restamp(path: Path, model: Path, **changes: object) -> Path:
    """Rewrite a side JSON file with `changes` and the sha256 of `model` as its model input."""
    document = json.loads(path.read_text()) if path.exists() else {}
    document.update(changes)
    document["provenance"] = {"inputs": {"model": {"path": str(model),
                                                   "sha256": sha256_file(model)}}}
    path.write_text(json.dumps(document))
    return path


def _report_cli(tiny_run: dict[str, Path], outdir: Path, *extra: str) -> int:
    return main(["report", "--data", str(tiny_run["alignment.npz"]), "--samples",
                 str(tiny_run["samples.fasta"]), "--outdir", str(outdir), "--triplets", "5",
                 "--nn-samples", "19", "--pca-components", "2", "--device", "cpu", *extra])


def test_report_refuses_side_files_of_another_model(tiny_run: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other.h5"
    other.write_bytes(tiny_run["model.h5"].read_bytes() + b"\0")  # another file, another hash
    foreign = _restamp(tmp_path / "foreign.json", other,
                       **json.loads(tiny_run["loglik.json"].read_text()))
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(json.dumps({"log_z": 31.5}))
    for flag, path, message in (("--loglik", foreign, "computed for another model"),
                                ("--sampling", _restamp(tmp_path / "s.json", other, mode="gibbs"),
                                 "computed for another model"),
                                ("--loglik", unsigned, "records no model sha256")):
        outdir = tmp_path / f"out_{path.stem}"
        capsys.readouterr()
        assert _report_cli(tiny_run, outdir, "--model", str(tiny_run["model.h5"]), flag,
                           str(path)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(path) in err[0]
        assert not outdir.exists() or not any(outdir.iterdir())
    # without model.h5, side files of two different models are refused too
    capsys.readouterr()
    assert _report_cli(tiny_run, tmp_path / "mixed", "--loglik", str(foreign), "--sampling",
                       str(tiny_run["sampling.json"])) == 1
    assert "different models" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "changes", "key"), [
    ("loglik.json", {"log_z": float("nan")}, "log_z"),
    ("loglik.json", {"log_z": "31.5"}, "log_z"),
    ("loglik.json", {"loglik_test": float("inf")}, "loglik_test"),
    ("loglik.json", {"log_z": None}, "log_z"),
    ("sampling.json", {"swap_rates": [0.5, float("nan")]}, "swap_rates"),
    ("sampling.json", {"equilibrated": "yes"}, "equilibrated"),
    ("sampling.json", {"sweeps": -3}, "sweeps"),
])
def test_report_refuses_values_of_the_wrong_type_or_not_finite(
        tiny_run: dict[str, Path], tmp_path: Path, name: str, changes: dict, key: str) -> None:
    path = _restamp(tiny_run[name], tiny_run["model.h5"], **changes)
    inputs = ReportInputs(tiny_run["alignment.npz"], tiny_run["samples.fasta"],
                          tiny_run["sampling.json"], tiny_run["model.h5"], None,
                          tiny_run["loglik.json"])
    with pytest.raises(InputError, match=f"{re.escape(str(path))}: ({key} is|no {key})"):
        run_stage(inputs, tmp_path / "out", SETTINGS, device="cpu")


def test_every_stage_warning_is_at_the_top_of_the_report(tiny_run: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """The monitor above its critical value at the last monitored update, disagreeing log Z
    estimates and unequilibrated samples: each one line naming its stage and number, in
    metrics.json and above the metrics of report.html."""
    model = tiny_run["model.h5"]
    _restamp(tiny_run["sampling.json"], model)
    _restamp(tiny_run["loglik.json"], model, warnings=[
        "log Z estimates disagree: ais 30.100 vs reverse 31.900 (difference 1.800 nats)"])
    log = tmp_path / "train_log.csv"
    log.write_text("update,time_s,monitor_reference,monitor_ks,monitor_ks_critical\n"
                   "100,1.0,exact,0.2,0.097\n600,6.0,exact,0.103,0.097\n700,7.0,,,\n")
    outdir = tmp_path / "report"
    metrics = run_stage(ReportInputs(tiny_run["alignment.npz"], tiny_run["samples.fasta"],
                                     tiny_run["sampling.json"], model, log,
                                     tiny_run["loglik.json"]), outdir, SETTINGS, device="cpu")
    warnings = metrics["warnings"]
    assert json.loads((outdir / "metrics.json").read_text())["warnings"] == warnings
    train = [w for w in warnings if w.startswith("train: ")]
    assert len(train) == 1 and "update 600" in train[0] and "0.103 > critical 0.097" in train[0]
    assert any(w.startswith("loglik: log Z estimates disagree") and "1.800" in w
               and "rerun loglik" in w for w in warnings)
    assert any(w.startswith("sample: SAMPLES NOT AT EQUILIBRIUM") and "100 sweeps" in w
               for w in warnings)
    html_text = (outdir / "report.html").read_text()
    top = html_text.split("<h2>Metrics</h2>")[0]
    page = _parse(outdir / "report.html")
    assert len(page.warnings) == len(warnings) >= 3
    for warning in warnings:
        assert html.escape(warning, quote=False)[:60] in top


def test_sampling_and_checkpoint_warnings_name_their_numbers() -> None:
    from rbmflow.report.warnings import loglik_warnings, sampling_warnings

    message = "plain Gibbs chains and the tempering samples disagree (KS distances 0.412)"
    for method, advice in (("ptt", "keep a tempering method"), ("gibbs", "sample.method: ptt")):
        [warning] = sampling_warnings({"method": method, "equilibrated": True,
                                       "gibbs_vs_tempering_warning": message})
        assert warning.startswith("sample: plain Gibbs") and "0.412" in warning
        assert advice in warning
    assert sampling_warnings({"mode": "rdm", "equilibrated": False}) == []
    assert loglik_warnings({"warnings": [], "warning": None}) == []
    [single] = loglik_warnings({"warning": "reverse: effective sample size 3.1 of 512 chains"})
    assert single.startswith("loglik: reverse: effective sample size 3.1") and "rerun" in single


def test_training_figure_draws_sparse_monitor_rows_on_their_own_scale():
    """The monitor runs at some log rows only: its KS distances are joined through the rows it
    ran at (the last one drawn), and its passage counts, in the thousands, get a panel of their
    own instead of flattening the distances."""
    from rbmflow.report import fig_training

    nan = float("nan")
    frame = pd.DataFrame({"update": [0, 50, 100, 150, 200, 250, 300],
                          "pearson_cij_train": [0.03, 0.8, 0.85, 0.88, 0.9, 0.91, 0.92],
                          "monitor_ks": [nan, 0.07, 0.14, nan, 0.08, nan, 0.05],
                          "monitor_ks_critical": [nan, 0.0975, 0.0975, nan, 0.0975, nan, 0.0975],
                          "monitor_passages": [nan, 2845, 1792, nan, 1464, nan, 700],
                          "monitor_swap_min": [nan, 0.228, 0.244, nan, 0.23, nan, 0.203]})
    fig = fig_training(frame)
    panels = {ax.get_ylabel(): ax for ax in fig.axes if ax.get_lines()}
    distances = panels["chains vs equilibrium"]
    lines = {line.get_label(): line for line in distances.get_lines()}
    assert set(lines) == {"monitor_ks", "monitor_ks_critical"}
    assert list(lines["monitor_ks"].get_xdata()) == [50, 100, 200, 300]
    assert list(lines["monitor_ks"].get_ydata()) == [0.07, 0.14, 0.08, 0.05]
    assert distances.get_ylim()[1] < 1.0
    assert "monitor_passages" in panels and "monitor_swap_min" in panels


def test_training_warning_reads_the_last_monitored_row_and_names_every_remedy() -> None:
    """A failure at update 100 that the monitor no longer sees at 600 is no warning; a failure
    at the last monitored row is, with the remedies the training log gives."""
    from rbmflow.report.warnings import training_warnings

    nan = float("nan")
    passed_at_the_end = pd.DataFrame({"update": [100, 600, 700], "monitor_ks": [0.2, 0.05, nan],
                                      "monitor_ks_critical": [0.097, 0.097, nan]})
    assert training_warnings(passed_at_the_end) == []
    failed_at_the_end = passed_at_the_end.assign(monitor_ks=[0.05, 0.2, nan])
    [warning] = training_warnings(failed_at_the_end)
    assert warning.startswith("train: at update 600") and "0.200 > critical 0.097" in warning
    assert "tempered chains (equilibrium_chains" in warning and "refresh_every" in warning
