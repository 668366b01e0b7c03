"""The Potts-Bernoulli RBM: parameters, energies and the conditional distributions.

Conventions: visible units are categorical with q states, given as integer codes
(C, L); hidden units are binary {0, 1}.

    E(v, h) = - sum_{i,mu} W[i, v_i, mu] h_mu - sum_i vbias[i, v_i] - sum_mu hbias[mu] h_mu
    F(v)    = - sum_i vbias[i, v_i] - sum_mu softplus(hbias[mu] + sum_i W[i, v_i, mu])

An inverse temperature `beta` multiplies every energy term. Energies are in nats.

Speed (a Gibbs sweep is the cost of training and sampling): the hidden inputs are an
embedding-bag over the rows of W picked by the codes (no one-hot is built); the visible
logits are one matrix product with the biases added by the same call, formed in bits (log2(e)
folded into the weights) so that the categorical draw is an inverse CDF over exp2(logits), with
no max-subtraction pass (a per-site constant folded into the biases keeps the exponentials in
range, and the rare rows that still overflow or underflow are redrawn exactly). On the CPU the
chains run in blocks small enough to stay in a core's cache, one single-threaded block per
worker thread, so no operation waits on a barrier; a float32 model's blocks run the compiled
kernel of model.kernels (the product on int8 digit planes of W, exact to float32 rounding, the
draw down the columns of state-major logits, and the loop outside the GIL).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from rbmflow.model.kernels import (
    LOG2_E,
    Int8DigitPlanes,
    compiled,
    draw_hiddens,
    hidden_inputs,
    int8_gibbs_sweeps,
    int8_products_work,
    sample_categorical_base2,
)

# Logits per block of a CPU sweep: the (chains, L*q) buffers of a block then stay in a core's
# cache. Fixed (not derived from the machine) so that a seed gives the same draws everywhere.
CPU_BLOCK_LOGITS = 2**18


def cpu_chain_block(num_visibles: int, num_states: int) -> int:
    """Most chains a CPU Gibbs sweep processes at once for L sites and q states."""
    return max(16, CPU_BLOCK_LOGITS // (num_visibles * num_states))


def balanced_starts(num_chains: int, largest: int) -> list[int]:
    """Starts of the blocks `num_chains` chains are cut into: at most `largest` chains each,
    sizes differing by at most one, an even number of blocks (unless one holds them all) so
    that two worker threads finish together. Depends on its arguments only, never on the
    machine."""
    count = max(1, -(-num_chains // largest))
    count += count % 2 if count > 1 else 0
    size, extra = divmod(num_chains, count)
    return [i * size + min(i, extra) for i in range(count)]


_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)


def block_pool(workers: int) -> ThreadPoolExecutor:
    """Worker threads for independent blocks of work: chains, averages (recreated after a
    fork)."""
    global _pool, _pool_key
    if _pool is None or _pool_key != (os.getpid(), workers):
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rbmflow-gibbs")
        _pool_key = (os.getpid(), workers)
    return _pool


@dataclass
class PottsRBM:
    """Parameters of a Potts-Bernoulli RBM.

    weight_matrix: (L, q, Nh); vbias: (L, q); hbias: (Nh,). All on one device, one dtype.
    """

    weight_matrix: Tensor
    vbias: Tensor
    hbias: Tensor

    def __post_init__(self) -> None:
        L, q, nh = self.weight_matrix.shape
        if self.vbias.shape != (L, q) or self.hbias.shape != (nh,):
            raise ValueError(
                f"inconsistent shapes: weight_matrix {tuple(self.weight_matrix.shape)}, "
                f"vbias {tuple(self.vbias.shape)}, hbias {tuple(self.hbias.shape)}"
            )

    @property
    def num_visibles(self) -> int:
        return int(self.weight_matrix.shape[0])

    @property
    def num_states(self) -> int:
        return int(self.weight_matrix.shape[1])

    @property
    def num_hiddens(self) -> int:
        return int(self.weight_matrix.shape[2])

    @property
    def device(self) -> torch.device:
        return self.weight_matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weight_matrix.dtype

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> PottsRBM:
        return PottsRBM(*(t.to(device=device, dtype=dtype) for t in self.tensors()))

    def clone(self) -> PottsRBM:
        return PottsRBM(*(t.detach().clone() for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.weight_matrix, self.vbias, self.hbias

    def named_parameters(self) -> dict[str, Tensor]:
        """Names as in the `rbms` package's HDF5 archives."""
        return {"weight_matrix": self.weight_matrix, "vbias": self.vbias, "hbias": self.hbias}

    # -- energies ---------------------------------------------------------------------------

    def _weight_rows(self) -> Tensor:
        """W viewed as (L*q, Nh): row i * q + a is W[i, a, :]."""
        return self.weight_matrix.reshape(-1, self.num_hiddens)

    def _site_offsets(self, device: torch.device) -> Tensor:
        """(L,) int64: i * q, the first row of site i in W viewed as (L*q, Nh)."""
        L, q = self.num_visibles, self.num_states
        return torch.arange(0, L * q, q, device=device, dtype=torch.long)

    def hidden_inputs(self, codes: Tensor) -> Tensor:
        """sum_i W[i, v_i, :] + hbias for codes (C, L); returns (C, Nh).

        An embedding-bag over the rows of W picked by the codes: no one-hot is built.
        """
        return hidden_inputs(codes.long(), self._weight_rows(), self.hbias,
                             self._site_offsets(codes.device))

    def visible_fields(self, codes: Tensor) -> Tensor:
        """sum_i vbias[i, v_i] for codes (C, L); returns (C,)."""
        flat = codes.long() + self._site_offsets(codes.device)
        return self.vbias.reshape(-1)[flat].sum(-1)

    def free_energy(self, codes: Tensor, beta: float = 1.0) -> Tensor:
        """F(v) at inverse temperature beta: -beta vbias . v - sum softplus(beta * inputs); (C,)."""
        return -beta * self.visible_fields(codes) - F.softplus(
            beta * self.hidden_inputs(codes)).sum(-1)

    def energy(self, codes: Tensor, hiddens: Tensor) -> Tensor:
        """E(v, h) for codes (C, L) and hiddens (C, Nh); returns (C,)."""
        return -self.visible_fields(codes) - (self.hidden_inputs(codes) * hiddens).sum(-1)

    def visible_logits(self, hiddens: Tensor, beta: float = 1.0) -> Tensor:
        """beta * (vbias + W h) for hiddens (C, Nh); returns (C, L, q). One fused product."""
        L, q, nh = self.weight_matrix.shape
        h = hiddens.to(self.dtype)
        weight, bias = self.weight_matrix.reshape(L * q, nh), self.vbias.reshape(L * q)
        if beta == 1.0:
            return F.linear(h, weight, bias).view(-1, L, q)
        return torch.addmm(bias, h, weight.T, beta=beta, alpha=beta).view(-1, L, q)

    # -- conditional sampling ---------------------------------------------------------------

    def sample_hiddens(self, codes: Tensor, beta: float = 1.0,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw h ~ p(h | v); returns (h, p(h = 1 | v)), each (C, Nh) in the model's dtype."""
        h, mag = self._hidden_draw(codes, beta, generator)
        return h.to(mag.dtype), mag

    def _hidden_draw(self, codes: Tensor, beta: float, generator: torch.Generator | None
                     ) -> tuple[Tensor, Tensor]:
        """(h as bool, p(h = 1 | v)) for codes (C, L)."""
        return draw_hiddens(codes.long(), self._weight_rows(), self.hbias,
                            self._site_offsets(codes.device), beta, generator)

    def sample_visibles(self, hiddens: Tensor, beta: float = 1.0,
                        generator: torch.Generator | None = None) -> Tensor:
        """Draw v ~ p(v | h); returns codes (C, L) as int64."""
        return _VisibleSampler(self, beta).sample(hiddens, generator)

    def gibbs(self, codes: Tensor, sweeps: int, beta: float = 1.0,
              generator: torch.Generator | None = None) -> Tensor:
        """Run `sweeps` alternating block-Gibbs sweeps v -> h -> v from codes (C, L).

        Returns the new codes (C, L), int64; the input is not modified. On the CPU the chains
        are cut into the blocks of balanced_starts(C, cpu_chain_block(L, q)); each block runs all
        its sweeps with single-threaded operations whose buffers stay in cache, on
        torch.get_num_threads() worker threads at once, and draws from its own generator seeded
        from `generator` (or the global one). The result thus depends on the seed, L, q and C,
        not on the number of threads.
        """
        codes = codes.long()
        if sweeps <= 0:
            return codes.clone()
        if codes.device.type != "cpu":
            return self._gibbs_block(codes, sweeps, beta, _VisibleSampler(self, beta),
                                     generator)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the sampler's operations are too short to share out
        try:
            sampler = _VisibleSampler(self, beta, sweep_kernel=True)
        finally:
            torch.set_num_threads(threads)
        starts = balanced_starts(codes.shape[0],
                                 cpu_chain_block(self.num_visibles, self.num_states))
        stops = [*starts[1:], codes.shape[0]]
        seeds = torch.randint(0, 2**62, (len(starts),), generator=generator).tolist()
        out = torch.empty_like(codes)

        def run(start: int, stop: int, seed: int) -> None:
            with torch.no_grad():
                g = torch.Generator().manual_seed(seed)
                out[start:stop] = self._gibbs_block(codes[start:stop], sweeps, beta, sampler, g)

        def run_single_threaded(start: int, stop: int, seed: int) -> None:
            if torch.get_num_threads() != 1:
                torch.set_num_threads(1)
            run(start, stop, seed)

        blocks = list(zip(starts, stops, seeds, strict=True))
        if threads == 1 or len(blocks) == 1:
            for block in blocks:
                run(*block)
            return out
        try:
            pool = block_pool(threads)
            for done in [pool.submit(run_single_threaded, *block) for block in blocks]:
                done.result()
        finally:
            torch.set_num_threads(threads)
        return out

    def _gibbs_block(self, codes: Tensor, sweeps: int, beta: float, sampler: _VisibleSampler,
                     generator: torch.Generator | None) -> Tensor:
        kernel, planes = sampler.kernel, sampler.planes
        if kernel is not None and planes is not None and generator is not None:
            return kernel(codes, sweeps, self._weight_rows(), self.hbias,
                          self._site_offsets(codes.device), planes.planes, planes.unit,
                          planes.bias, self.num_states, float(beta), generator)
        for _ in range(sweeps):
            codes = sampler.sample(self._hidden_draw(codes, beta, generator)[0], generator)
        return codes

    # -- gauge ------------------------------------------------------------------------------

    @torch.no_grad()
    def apply_zero_sum_gauge_(self) -> None:
        """Make sum_a W[i, a, mu] = 0 and sum_a vbias[i, a] = 0, in place.

        The shift taken out of W is put into hbias, so p(v) is unchanged exactly; the shift of
        vbias is a constant energy offset, so p(v) is unchanged too (log Z moves by it).
        """
        w_mean = self.weight_matrix.mean(dim=1, keepdim=True)
        self.hbias += w_mean.sum(dim=(0, 1))
        self.weight_matrix -= w_mean
        self.vbias -= self.vbias.mean(dim=1, keepdim=True)


class _VisibleSampler:
    """Draws v ~ p(v | h) for one model and beta, with the per-site shift computed once.

    p(v_i = a | h) is unchanged when a constant c_i is taken out of every logit of site i; c_i
    is the largest logit of the site at h = 1/2 (the centre of the hidden hypercube), so
    exp(logits - c) stays in floating-point range for all but extreme fields, and those rows
    are redrawn exactly by the draw's fallback. The logits are formed in bits (log2(e) folded
    into the weights). With `sweep_kernel`, for a float32 model on the CPU, it also holds the
    kernels.Int8DigitPlanes of those weights and the compiled sweep kernel that uses them
    (PottsRBM._gibbs_block); a single draw (`sample`) needs neither.
    """

    def __init__(self, model: PottsRBM, beta: float, sweep_kernel: bool = False) -> None:
        L, q, nh = model.weight_matrix.shape
        self.num_visibles, self.num_states, self.dtype = L, q, model.dtype
        centre = model.vbias + 0.5 * model.weight_matrix.sum(-1)
        shifted = model.vbias - centre.amax(-1, keepdim=True)
        self.bias = shifted.reshape(L * q) * (beta * LOG2_E)
        self.weight = model.weight_matrix.reshape(L * q, nh) * (beta * LOG2_E)
        self.planes: Int8DigitPlanes | None = None
        if (sweep_kernel and model.dtype == torch.float32 and model.device.type == "cpu"
                and int8_products_work()):
            # State-major rows (a * L + i) for the kernel's column draw.
            self.planes = Int8DigitPlanes(
                self.weight.view(L, q, nh).transpose(0, 1).reshape(q * L, nh),
                self.bias.view(L, q).T.reshape(q * L))
        # Compiled here, in the caller's thread, before any worker thread runs it.
        self.kernel = compiled(int8_gibbs_sweeps) if self.planes is not None else None

    def sample(self, hiddens: Tensor, generator: torch.Generator | None) -> Tensor:
        """hiddens (C, Nh), binary; returns codes (C, L) int64."""
        logits = F.linear(hiddens.to(self.dtype), self.weight, self.bias)
        return sample_categorical_base2(
            logits.view(-1, self.num_visibles, self.num_states), generator)


def _bernoulli(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """1[u < p] for uniform u, in the dtype of probs."""
    u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
    return u.lt_(probs)


def sample_categorical(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of logits (..., q), p(a) proportional to exp(logits[..., a]).

    The draw of kernels.sample_categorical_base2 on logits * log2(e): exact to float rounding,
    including rows beyond exp's range. Returns int64 codes (...).
    """
    return sample_categorical_base2(logits * LOG2_E, generator)


def random_codes(num: int, length: int, num_states: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random codes (num, length), int64."""
    return torch.randint(0, num_states, (num, length), device=device, generator=generator)


def one_hot(codes: Tensor, num_states: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(C, L) codes to a (C, L, q) one-hot tensor, written once in `dtype`."""
    out = torch.zeros(*codes.shape, num_states, device=codes.device, dtype=dtype)
    return out.scatter_(-1, codes.long().unsqueeze(-1), 1.0)
