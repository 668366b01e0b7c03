"""The Potts RBM against exact enumeration: energies, log Z, the Gibbs kernel, the gauge.

Sizes are distinct (mostly primes) so that a swapped axis fails loudly. Statistical checks use
chi-square bounds with a false-alarm probability near 1e-6 at a fixed seed, and each is shown
to reject a slightly wrong sampler, so none can pass by being loose.
"""

from __future__ import annotations

import inspect
import itertools
import math
import runpy
from pathlib import Path

import pytest
import torch
from rbmflow.model.kernels import (
    Int8DigitPlanes,
    compiled,
    draw_columns_base2,
    int8_gibbs_sweeps,
    sample_categorical_base2,
)
from rbmflow.model.partition import hidden_configurations, log_partition_exact
from rbmflow.model.rbm import (
    PottsRBM,
    _VisibleSampler,
    balanced_starts,
    cpu_chain_block,
    one_hot,
    random_codes,
    sample_categorical,
)

# Standard normal quantile of the bounds (two-sided p ~ 2e-6).
Z_BOUND = 4.75


def make_model(L: int, q: int, nh: int, scale: float = 0.6, seed: int = 7,
               dtype: torch.dtype = torch.float64) -> PottsRBM:
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(
        weight_matrix=scale * torch.randn(L, q, nh, generator=g, dtype=dtype),
        vbias=0.8 * torch.randn(L, q, generator=g, dtype=dtype),
        hbias=0.5 * torch.randn(nh, generator=g, dtype=dtype),
    )


def all_codes(L: int, q: int) -> torch.Tensor:
    """Every visible configuration, (q^L, L), in lexicographic order (site 0 slowest)."""
    return torch.tensor(list(itertools.product(range(q), repeat=L)), dtype=torch.long)


def config_index(codes: torch.Tensor, q: int) -> torch.Tensor:
    """Lexicographic index of each row of codes, matching all_codes."""
    L = codes.shape[1]
    powers = q ** torch.arange(L - 1, -1, -1, dtype=torch.long)
    return (codes.long() * powers).sum(-1)


def exact_visible_probs(model: PottsRBM, beta: float = 1.0) -> tuple[torch.Tensor, float]:
    """p_beta(v) for every v of all_codes and log Z_beta, by enumerating the visible layer."""
    m = model.to(dtype=torch.float64)
    log_weights = -m.free_energy(all_codes(m.num_visibles, m.num_states), beta)
    log_z = torch.logsumexp(log_weights, 0)
    return torch.exp(log_weights - log_z), float(log_z)


def chi2_upper(dof: int, z: float = Z_BOUND) -> float:
    """Upper quantile of chi-square with dof degrees of freedom (Wilson-Hilferty)."""
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * math.sqrt(c)) ** 3


def chi2_statistic(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson chi-square of counts (K,) against probs (K,); bins expecting < 5 are pooled.

    A count in a bin of probability zero makes the statistic infinite.
    """
    n = counts.sum()
    expected = n * probs.double()
    if bool((counts[expected == 0] > 0).any()):
        return math.inf, 1
    keep = expected > 0
    counts, expected = counts.double()[keep], expected[keep]
    small = expected < 5
    obs, exp = counts[~small], expected[~small]
    if small.any():
        obs = torch.cat([obs, counts[small].sum().reshape(1)])
        exp = torch.cat([exp, expected[small].sum().reshape(1)])
    return float(((obs - exp) ** 2 / exp).sum()), int(obs.numel() - 1)


def multi_chi2(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Sum of per-row chi-squares for counts and probs (R, K): independent rows add up."""
    stats = [chi2_statistic(c, p) for c, p in zip(counts, probs, strict=True)]
    return sum(s for s, _ in stats), sum(d for _, d in stats)


# -- energies and partition function ---------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_free_energy_is_minus_log_sum_over_hiddens(beta: float) -> None:
    L, q, nh = 7, 5, 3
    model = make_model(L, q, nh)
    codes = random_codes(11, L, q)
    hiddens = hidden_configurations(nh)
    energies = torch.stack([model.energy(codes, h.expand(codes.shape[0], -1)) for h in hiddens])
    expected = -torch.logsumexp(-beta * energies, dim=0)
    torch.testing.assert_close(model.free_energy(codes, beta), expected, rtol=0, atol=1e-10)


def test_energy_matches_one_hot_definition() -> None:
    L, q, nh = 7, 5, 3
    model = make_model(L, q, nh)
    codes = random_codes(13, L, q)
    h = (torch.rand(13, nh) < 0.5).double()
    x = one_hot(codes, q, torch.float64)
    expected = (-torch.einsum("cia,iam,cm->c", x, model.weight_matrix, h)
                - torch.einsum("cia,ia->c", x, model.vbias) - h @ model.hbias)
    torch.testing.assert_close(model.energy(codes, h), expected, rtol=0, atol=1e-10)
    logits = model.visible_logits(h, beta=0.3)
    torch.testing.assert_close(
        logits, 0.3 * (model.vbias + torch.einsum("iam,cm->cia", model.weight_matrix, h)))


def test_log_partition_hidden_enumeration_equals_visible_enumeration() -> None:
    L, q, nh = 4, 3, 5
    model = make_model(L, q, nh)
    _, log_z_visible = exact_visible_probs(model)
    assert log_partition_exact(model) == pytest.approx(log_z_visible, abs=1e-9)


def test_zero_sum_gauge_keeps_the_distribution() -> None:
    L, q, nh = 4, 3, 5
    model = make_model(L, q, nh)
    before, _ = exact_visible_probs(model)
    gauged = model.clone()
    gauged.apply_zero_sum_gauge_()
    after, _ = exact_visible_probs(gauged)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)
    assert gauged.weight_matrix.sum(1).abs().max() < 1e-12
    assert gauged.vbias.sum(1).abs().max() < 1e-12
    assert (gauged.hbias - model.hbias).abs().max() > 1e-3


# -- the categorical draw --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_categorical_follows_softmax(dtype: torch.dtype) -> None:
    q, draws = 7, 40_000
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, q, generator=g, dtype=dtype) * 2
    # Rows that overflow, underflow, and mix both without a max subtraction.
    logits[1] += 800.0
    logits[2] -= 900.0
    logits[3, :3] = torch.tensor([95.0, -150.0, 94.0], dtype=dtype)
    logits[4, 0] = -math.inf
    codes = sample_categorical(logits.expand(draws, -1, -1).contiguous(), g)
    assert codes.shape == (draws, 5) and codes.dtype == torch.long
    counts = torch.stack([torch.bincount(codes[:, r], minlength=q) for r in range(5)])
    probs = torch.softmax(logits.double(), -1)
    stat, dof = multi_chi2(counts, probs)
    assert stat < chi2_upper(dof), (stat, dof)
    assert counts[4, 0] == 0
    # The same statistic rejects draws from slightly different probabilities.
    wrong = torch.softmax(logits.double() * 1.1, -1)
    stat_wrong, _ = multi_chi2(counts, wrong)
    assert stat_wrong > chi2_upper(dof)


def test_sample_categorical_base2_follows_powers_of_two() -> None:
    draws = 40_000
    g = torch.Generator().manual_seed(13)
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5], [300.0, 299.0, 0.0, -5.0, 300.0]])
    codes = sample_categorical_base2(logits.expand(draws, -1, -1).contiguous(), g)
    assert_powers_of_two(codes, logits)


def assert_powers_of_two(codes: torch.Tensor, logits: torch.Tensor) -> None:
    """Draws codes (draws, R) follow p(a) proportional to 2**logits[r, a] (logits (R, q)) by
    chi-square, and the same test rejects the natural-log reading of the logits."""
    q = logits.shape[1]
    counts = torch.stack([torch.bincount(codes[:, r], minlength=q) for r in range(len(logits))])
    stat, dof = multi_chi2(counts, torch.softmax(logits.double() * math.log(2.0), -1))
    assert stat < chi2_upper(dof), (stat, dof)
    stat_natural, _ = multi_chi2(counts, torch.softmax(logits.double(), -1))
    assert stat_natural > chi2_upper(dof)


@pytest.mark.parametrize("q", [5, 263])
def test_column_draw_follows_powers_of_two(q: int) -> None:
    """draw_columns_base2 (the CPU sweep's draw, one draw per column of (q, N)): the same law
    as the row draw, through the overflow fallback, and beyond 255 states (where the count of
    cumulative sums no longer fits a byte)."""
    draws = 30_000
    g = torch.Generator().manual_seed(q)
    logits = torch.full((3, q), -40.0)
    logits[0, :5] = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5])
    logits[1, :5] = torch.tensor([300.0, 299.0, 0.0, -5.0, 300.0])  # overflows exp2
    logits[2, -3:] = torch.tensor([1.0, 0.0, 2.0])  # mass on the last states
    columns = logits.T.repeat(1, draws)  # column n is row n % 3
    f32 = torch.finfo(torch.float32)
    codes = draw_columns_base2(columns, g, f32.eps, f32.tiny, f32.max).view(draws, 3)
    assert codes.dtype == torch.long and int(codes.max()) < q
    assert_powers_of_two(codes, logits)


@pytest.mark.parametrize("nh", [1, 29, 263, 601])
def test_int8_digit_planes_give_the_product_to_float32_rounding(nh: int) -> None:
    g = torch.Generator().manual_seed(nh)
    rows = 37
    weight = torch.randn(rows, nh, generator=g) * torch.logspace(-3, 2, rows)[:, None]
    weight[5] = 0.0  # a row of zeros
    weight[6, 0] = 1e4  # one large entry
    bias = torch.randn(rows, generator=g)
    planes = Int8DigitPlanes(weight, bias)
    # The unit is the row's largest entry over 127 * 254**2 (to float32 rounding); every
    # entry is within half a unit plus one float32 rounding of W / unit.
    row_max = weight.double().abs().amax(1)
    unit = planes.unit.double()
    nonzero = row_max > 0
    assert ((unit - row_max / (127 * 254**2)).abs()[nonzero] <= unit[nonzero] * 2**-23).all()
    d = planes.planes.double().view(3, rows, nh)
    assert d.abs().max() <= 127
    represented = (d[0] * 254**2 + d[1] * 254 + d[2]) * unit[:, None]
    error = (represented - weight.double()).abs()
    assert (error <= 0.5 * unit[:, None] + weight.double().abs() * 2**-24).all()
    # The product with binary vectors (bool and int8) against float64: the digits' error summed
    # over the active units, plus float32 rounding of the sum of magnitudes; hidden counts
    # above 256 take several int32 parts.
    hiddens = torch.rand(19, nh, generator=g) < 0.5
    hiddens[0] = True
    exact = hiddens.double() @ weight.double().T + bias.double()
    digits_error = hiddens.double().sum(1, keepdim=True) * 0.5 * unit[None, :]
    rounding = 4 * 2**-24 * (hiddens.double() @ weight.double().abs().T + bias.double().abs())
    for h in (hiddens, hiddens.to(torch.int8)):
        got = planes.product(h).T
        assert got.shape == (19, rows) and got.dtype == torch.float32
        assert ((got.double() - exact).abs() <= digits_error + rounding + 1e-30).all()
    # Middle digits off by one break the bound.
    planes.planes[rows:2 * rows] ^= 1
    assert ((planes.product(hiddens).T.double() - exact).abs() > digits_error + rounding).any()
    with pytest.raises(ValueError, match="float32"):
        Int8DigitPlanes(weight.double(), bias)


def test_sample_categorical_is_reproducible_from_its_generator() -> None:
    logits = torch.randn(17, 11, 13)
    first = sample_categorical(logits, torch.Generator().manual_seed(5))
    again = sample_categorical(logits, torch.Generator().manual_seed(5))
    other = sample_categorical(logits, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert sample_categorical(torch.randn(0, 3, 13)).shape == (0, 3)


def test_sample_hiddens_follows_the_sigmoid() -> None:
    L, q, nh, draws = 7, 5, 3, 30_000
    model = make_model(L, q, nh, dtype=torch.float32)
    codes = random_codes(2, L, q).repeat(draws, 1)
    h, mag = model.sample_hiddens(codes, beta=0.8, generator=torch.Generator().manual_seed(2))
    expected = torch.sigmoid(0.8 * (one_hot(codes[:2], q).view(2, -1)
                                    @ model.weight_matrix.view(L * q, nh) + model.hbias))
    torch.testing.assert_close(mag[:2], expected)
    ones = h.view(draws, 2, nh).sum(0)
    probs = expected.double().reshape(-1)
    counts = torch.stack([draws - ones.reshape(-1), ones.reshape(-1)], 1)
    stat, dof = multi_chi2(counts, torch.stack([1 - probs, probs], 1))
    assert stat < chi2_upper(dof), (stat, dof)


# -- the Gibbs kernel ------------------------------------------------------------------------


def exact_draws(probs: torch.Tensor, L: int, q: int, num: int, seed: int) -> torch.Tensor:
    picks = torch.multinomial(probs, num, replacement=True,
                              generator=torch.Generator().manual_seed(seed))
    return all_codes(L, q)[picks]


def marginal_chi2(codes: torch.Tensor, probs: torch.Tensor, q: int) -> list[tuple[float, int]]:
    """(chi-square, dof) of every single-site and every pair marginal of codes vs exact ones."""
    L = codes.shape[1]
    space = all_codes(L, q)
    tests = []
    for i in range(L):
        exact = torch.zeros(q, dtype=torch.float64).index_add_(0, space[:, i], probs)
        tests.append(chi2_statistic(torch.bincount(codes[:, i], minlength=q), exact))
    for i, j in itertools.combinations(range(L), 2):
        exact = torch.zeros(q * q, dtype=torch.float64).index_add_(
            0, space[:, i] * q + space[:, j], probs)
        tests.append(chi2_statistic(torch.bincount(codes[:, i] * q + codes[:, j],
                                                   minlength=q * q), exact))
    return tests


@pytest.mark.parametrize(("beta", "dtype"), [(1.0, torch.float32), (0.6, torch.float32),
                                             (0.6, torch.float64)])
def test_gibbs_leaves_the_exact_distribution_invariant(beta: float, dtype: torch.dtype) -> None:
    """float32: the compiled int8 kernel; float64: the float product, same draw."""
    L, q, nh = 4, 3, 5
    chains = 2 * cpu_chain_block(L, q) + 101  # several blocks, the last one partial
    model = make_model(L, q, nh, scale=0.7)
    probs, _ = exact_visible_probs(model, beta)
    start = exact_draws(probs, L, q, chains, seed=11)
    out = model.to(dtype=dtype).gibbs(start, sweeps=3, beta=beta,
                                      generator=torch.Generator().manual_seed(4))
    assert out.shape == start.shape and out.dtype == torch.long
    assert not torch.equal(out, start)
    # Joint distribution over all q^L configurations.
    counts = torch.bincount(config_index(out, q), minlength=q**L)
    stat, dof = chi2_statistic(counts, probs)
    assert stat < chi2_upper(dof), (stat, dof)
    # Every single-site and pair marginal.
    for stat, dof in marginal_chi2(out, probs, q):
        assert stat < chi2_upper(dof), (stat, dof)


def test_gibbs_converges_from_random_start_and_rejects_a_wrong_kernel() -> None:
    L, q, nh = 4, 3, 5
    model = make_model(L, q, nh, scale=0.7)
    probs, _ = exact_visible_probs(model)
    g = torch.Generator().manual_seed(8)
    start = random_codes(15_000, L, q, generator=g)
    out = model.to(dtype=torch.float32).gibbs(start, sweeps=30, generator=g)
    counts = torch.bincount(config_index(out, q), minlength=q**L)
    stat, dof = chi2_statistic(counts, probs)
    assert stat < chi2_upper(dof), (stat, dof)
    # A kernel with the hidden-to-visible weights taken from the wrong sites (same shapes)
    # samples another distribution; the same test must reject it.
    wrong = model.clone()
    wrong.weight_matrix = model.weight_matrix.flip(0)
    bad = wrong.to(dtype=torch.float32).gibbs(start, sweeps=30, generator=g)
    stat_bad, _ = chi2_statistic(torch.bincount(config_index(bad, q), minlength=q**L), probs)
    assert stat_bad > chi2_upper(dof), stat_bad


def test_gibbs_with_extreme_fields_matches_exact_marginals() -> None:
    """Fields far beyond exp's float32 range: the overflow fallback must keep p(v | h) exact."""
    L, q, nh = 3, 5, 2
    model = make_model(L, q, nh, scale=1.0)
    model.weight_matrix[:, :, 0] *= 150.0
    model.vbias[0] += torch.tensor([400.0, 399.0, 0.0, -300.0, 399.5], dtype=torch.float64)
    probs, _ = exact_visible_probs(model)
    start = exact_draws(probs, L, q, 20_000, seed=12)
    out = model.to(dtype=torch.float32).gibbs(start, sweeps=2,
                                              generator=torch.Generator().manual_seed(9))
    counts = torch.bincount(config_index(out, q), minlength=q**L)
    stat, dof = chi2_statistic(counts, probs)
    assert stat < chi2_upper(dof), (stat, dof)


def test_gibbs_is_reproducible_and_keeps_its_input() -> None:
    L, q, nh = 11, 7, 13
    model = make_model(L, q, nh, dtype=torch.float32)
    start = random_codes(cpu_chain_block(L, q) + 37, L, q).to(torch.uint8)
    copy = start.clone()
    a = model.gibbs(start, 4, generator=torch.Generator().manual_seed(1))
    b = model.gibbs(start, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(start, copy)
    assert torch.equal(model.gibbs(start, 0), start.long())
    assert int(a.min()) >= 0 and int(a.max()) < q
    # The same draws whatever the number of threads, and independent draws in every block.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = model.gibbs(start, 4, generator=torch.Generator().manual_seed(1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, serial)
    block = cpu_chain_block(L, q)
    same = start[:1].expand(2 * block, -1)
    out = model.gibbs(same, 1, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out[:block], out[block:])


def test_compiled_sweep_kernel_draws_what_the_eager_one_draws() -> None:
    """The CPU sweep runs TorchScript's compilation of int8_gibbs_sweeps: the same draws as the
    Python function, float32's limits as its defaults."""
    L, q, nh, chains = 11, 7, 13, 29
    model = make_model(L, q, nh, dtype=torch.float32)
    scripted = compiled(int8_gibbs_sweeps)
    assert isinstance(scripted, torch.jit.ScriptFunction)
    defaults = inspect.signature(int8_gibbs_sweeps).parameters
    info = torch.finfo(torch.float32)
    assert [defaults[k].default for k in ("eps", "tiny", "largest")] == [
        info.eps, info.tiny, info.max]
    planes = _VisibleSampler(model, 0.7, sweep_kernel=True).planes
    assert planes is not None
    args = (random_codes(chains, L, q), 5, model.weight_matrix.reshape(L * q, nh), model.hbias,
            torch.arange(0, L * q, q), planes.planes, planes.unit, planes.bias, q, 0.7)
    a = scripted(*args, torch.Generator().manual_seed(3))
    b = int8_gibbs_sweeps(*args, torch.Generator().manual_seed(3))
    assert a.shape == (chains, L) and torch.equal(a, b)


def test_gibbs_takes_the_float_product_where_int8_products_fail(monkeypatch) -> None:
    """A CPU whose torch._int_mm is missing or wrong: float32 sweeps take the float product
    and keep p(v | h) (the draws are those of the int8 kernel up to rounding)."""
    import rbmflow.model.rbm as rbm_module

    L, q, nh = 4, 3, 5
    model = make_model(L, q, nh, scale=0.7)
    probs, _ = exact_visible_probs(model)
    start = exact_draws(probs, L, q, 20_000, seed=13)
    monkeypatch.setattr(rbm_module, "int8_products_work", lambda: False)
    model32 = model.to(dtype=torch.float32)
    assert rbm_module._VisibleSampler(model32, 1.0, sweep_kernel=True).planes is None
    out = model32.gibbs(start, sweeps=2, generator=torch.Generator().manual_seed(5))
    stat, dof = chi2_statistic(torch.bincount(config_index(out, q), minlength=q**L), probs)
    assert stat < chi2_upper(dof), (stat, dof)


@pytest.mark.parametrize(("chains", "largest"), [(2000, 235), (7, 11), (470, 235), (471, 235),
                                                  (0, 5), (1009, 13)])
def test_balanced_starts_cut_even_counts_of_equal_blocks(chains: int, largest: int) -> None:
    starts = balanced_starts(chains, largest)
    sizes = [b - a for a, b in zip(starts, [*starts[1:], chains], strict=True)]
    assert starts[0] == 0 and sum(sizes) == chains
    assert max(sizes) <= largest
    assert max(sizes) - min(sizes) <= 1
    assert len(sizes) == 1 or len(sizes) % 2 == 0
    assert len(sizes) == 1 if chains <= largest else len(sizes) >= 2


def test_one_hot_marks_exactly_the_codes() -> None:
    codes = random_codes(13, 7, 5).to(torch.uint8)
    x = one_hot(codes, 5, torch.float64)
    assert x.shape == (13, 7, 5) and x.dtype == torch.float64
    assert torch.equal(x.sum(-1), torch.ones(13, 7, dtype=torch.float64))
    assert torch.equal(x.argmax(-1), codes.long())


def test_gpu_sweep_benchmark_runs_on_the_cpu() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_sweeps.py"
    bench = runpy.run_path(str(script))
    result = bench["run"](bench["parse_args"](
        ["--device", "cpu", "--length", "7", "--chains", "31", "--hidden", "5",
         "--sweeps", "3", "--repeats", "2"]))
    assert result["sweeps_per_s"] > 0 and result["matmul_tflops"] > 0
    assert math.isfinite(result["fraction_of_matmul"])
