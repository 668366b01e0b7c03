"""Tensor kernels of the CPU Gibbs sweep: the visible product, the categorical draw, and the
sweep loop of a block of chains.

All are exact to float32 rounding and cheaper than their plain forms on the CPU:

- `Int8DigitPlanes`: the product W h of a float32 matrix with binary hidden vectors, done as
  int8 x int8 products with int32 accumulation (exact) on three int8 digit planes of W, about
  1.3 times as fast as a float32 product at these shapes, the combination of the planes
  included (used where `int8_products_work`, probed once per process). Its result has one
  column per hidden vector;
- `sample_categorical_base2`: a categorical draw from logits in bits (p proportional to
  2**logit), since exp2 is three times cheaper than exp; callers fold log2(e) into their weights.
  `draw_columns_base2` is the same draw for logits laid out with one distribution per column:
  its cumulative sums and its search are then operations over whole rows, with no per-row
  `searchsorted` (a sweep of 235 chains at L = 53: 950 us against 1,164 with the row draw);
- `int8_gibbs_sweeps`: the sweeps of one block of chains with both, the visible logits in
  state-major order so that the product's columns are the draw's, compiled by TorchScript
  (`compiled`) so that the loop runs without the GIL: the worker threads of a CPU sweep then
  never wait on each other between operations. Without TorchScript the same function runs
  eagerly.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

LOG2_E = 1.0 / math.log(2.0)

DIGIT_BASE = 254  # balanced base-254 digits, each within [-127, 127] (int8)
INT32_SAFE_HIDDENS = 256  # |sum| <= 256 * 127 * (1 + 254 + 254**2) < 2**31
_FLOAT32 = torch.finfo(torch.float32)


class Int8DigitPlanes:
    """A float32 matrix W (M, Nh) as three int8 digit planes with one unit per row, for the
    product with binary vectors h in {0, 1}^Nh.

    Row r holds the integers N = round(W[r] / u_r), u_r = max|W[r]| / (127 * 254**2) (float32),
    as N = 254**2 d0 + 254 d1 + d2 with every digit in [-127, 127]. |N| <= 127 * 254**2 + 1 <
    2**24, so N and its digits are exact in float32 and int32, and each entry is within
    u_r / 2 + |W| * 2**-24 = max|W[r]| * 6.1e-8 + |W| * 2**-24 of W: a float32 rounding of the
    row's largest entry. A product over k active units is within k times that. The products
    d_k . h are int8 x int8 with int32 accumulation (exact); only their combination into
    float32 rounds.
    """

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        """weight (M, Nh) and bias (M,), float32 on the CPU: `product` returns W h + bias, one
        column per vector h."""
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError("Int8DigitPlanes takes a float32 matrix on the CPU")
        unit = (weight.abs().amax(1).double() / (127 * DIGIT_BASE**2)).float()
        unit = torch.where(unit > 0, unit, torch.ones_like(unit))
        number = torch.round(weight / unit[:, None])
        digits = []
        for _ in range(2):  # d2, then d1: exact float32 arithmetic on integers below 2**24
            rest = torch.round(number / DIGIT_BASE)
            digits.append(number - DIGIT_BASE * rest)
            number = rest
        self.num_rows, self.num_hiddens = weight.shape
        # (3M, Nh): one int8 product gives the three planes' sums one above the other.
        self.planes = torch.cat([number, *digits[::-1]]).to(torch.int8)
        self.unit = unit
        self.bias = bias.to(torch.float32).contiguous()

    def product(self, hiddens: Tensor) -> Tensor:
        """hiddens (C, Nh), bool or int8 with values 0/1; returns (M, C) float32: column c is
        W h_c + bias."""
        return digit_product(as_columns(hiddens), self.planes, self.unit, self.bias)


def as_columns(hiddens: Tensor) -> Tensor:
    """hiddens (C, Nh), bool or int8, as a fresh (Nh, C) int8 tensor with row stride C:
    torch._int_mm returns garbage for a right operand with one row and row stride 1, the
    strides a transpose or `.contiguous()` leaves on a one-row tensor."""
    columns = torch.empty((hiddens.shape[1], hiddens.shape[0]), dtype=torch.int8,
                          device=hiddens.device)
    return columns.copy_(hiddens.T)


def digit_product(hiddens: Tensor, planes: Tensor, unit: Tensor, bias: Tensor,
                  base: int = DIGIT_BASE, chunk: int = INT32_SAFE_HIDDENS) -> Tensor:
    """The digit planes (3M, Nh) of Int8DigitPlanes times hiddens (Nh, C), int8 0/1 with one
    vector per column, combined as float32 with `unit` (M,) and plus `bias` (M,); returns
    (M, C). The constants come in as defaults because TorchScript reads no module globals."""
    out = _planes_sum(planes[:, :chunk], hiddens[:chunk], unit, base)
    for k in range(chunk, hiddens.shape[0], chunk):
        out.add_(_planes_sum(planes[:, k:k + chunk], hiddens[k:k + chunk], unit, base))
    return out.add_(bias[:, None])


def _planes_sum(planes: Tensor, hiddens: Tensor, unit: Tensor, base: int) -> Tensor:
    """sum_k base**(2-k) d_k h for one part of at most 256 hidden units, in int32 (exact),
    times `unit` (M,) as float32; returns (M, C)."""
    M, C = unit.shape[0], hiddens.shape[1]
    sums = torch._int_mm(planes, hiddens).view(3, M, C)
    combined = torch.add(sums[1], sums[0], alpha=base)
    return torch.add(sums[2], combined, alpha=base).float().mul_(unit[:, None])


def sample_categorical_base2(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of logits (..., q) in bits: p(a) proportional to 2**logits[..., a].

    Inverse CDF (see draw_rows_base2); on a GPU the row maxima are subtracted first, so that no
    host synchronisation is needed for the overflow check. Returns int64 codes (...).
    """
    q = logits.shape[-1]
    rows = logits.reshape(-1, q)
    if rows.shape[0] == 0:
        return torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    if rows.device.type != "cpu":
        rows = rows - rows.amax(-1, keepdim=True)
    info = torch.finfo(rows.dtype)
    return draw_rows_base2(rows, generator, info.eps, info.tiny, info.max).view(logits.shape[:-1])


def draw_rows_base2(rows: Tensor, generator: Optional[torch.Generator],  # noqa: UP045
                    eps: float, tiny: float, largest: float) -> Tensor:
    """One draw per row of rows (N, q), p(a) proportional to 2**rows[:, a]; eps, tiny and
    largest are those of the dtype's finfo. Returns int64 codes (N,).

    The cumulative sums of exp2(rows) are searched for u * total with u uniform in [0, 1). No
    max is subtracted first: rows whose total overflows, is not a number, or underflows so far
    that precision is lost are redrawn from the max-shifted rows (`_redraw_out_of_range`), so
    every row follows its distribution exactly.
    """
    q = rows.shape[1]
    cdf = torch.exp2(rows).cumsum_(-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=rows.device, dtype=rows.dtype)
    codes = torch.searchsorted(cdf, _below(u.mul_(total), total, eps), right=True).squeeze_(-1)
    _redraw_out_of_range(codes, total.squeeze(-1), rows, generator, eps, tiny, largest)
    return codes.clamp_(max=q - 1)


def draw_columns_base2(columns: Tensor, generator: Optional[torch.Generator],  # noqa: UP045
                       eps: float, tiny: float, largest: float) -> Tensor:
    """draw_rows_base2 for columns (q, N), one draw per column, on the CPU: the cumulative
    sums run down the q rows and the code is the count of sums at most u * total, so every
    operation is over contiguous rows of N values (no per-row search). Returns int64 codes (N,).
    """
    q = columns.shape[0]
    cdf = torch.exp2(columns)
    for a in range(1, q):
        cdf[a].add_(cdf[a - 1])
    total = cdf[q - 1]
    u = torch.rand(total.shape, generator=generator, device=columns.device,
                   dtype=columns.dtype)
    below = cdf <= _below(u.mul_(total), total, eps)
    counts = below.sum(0, dtype=torch.uint8) if q < 256 else below.sum(0)
    codes = counts.clamp_(max=q - 1).long()
    _redraw_out_of_range(codes, total, columns.T, generator, eps, tiny, largest)
    return codes


def _redraw_out_of_range(codes: Tensor, total: Tensor, rows: Tensor,
                         generator: Optional[torch.Generator],  # noqa: UP045
                         eps: float, tiny: float, largest: float) -> None:
    """Redraw, in place, the codes (N,) of the rows (N, q) whose total (N,) of exp2 overflowed,
    is not a number, or underflowed below tiny / eps, from the max-shifted rows."""
    smallest, biggest = torch.aminmax(total)
    if float(smallest) > tiny / eps and float(biggest) <= largest:
        return
    bad = (~((total > tiny / eps) & (total <= largest))).nonzero().squeeze(-1)
    sub = rows[bad]
    cdf = torch.exp2(sub - sub.amax(-1, keepdim=True)).cumsum_(-1)
    sub_total = cdf[:, -1:]
    u = torch.rand(sub_total.shape, generator=generator, device=rows.device, dtype=rows.dtype)
    codes[bad] = torch.searchsorted(cdf, _below(u.mul_(sub_total), sub_total, eps),
                                    right=True).squeeze_(-1).clamp_(max=rows.shape[1] - 1)


def _below(values: Tensor, total: Tensor, eps: float) -> Tensor:
    """values (u * total, u in [0, 1)) kept strictly under total: float rounding can make
    u * total == total, which would select a trailing state of probability zero."""
    return torch.minimum(values, total * (1 - eps))


def hidden_inputs(codes: Tensor, weight_rows: Tensor, hbias: Tensor, offsets: Tensor) -> Tensor:
    """sum_i W[i, v_i, :] + hbias for int64 codes (C, L), with W viewed as weight_rows (L*q, Nh)
    and offsets (L,) = i * q: an embedding-bag over the rows the codes pick (no one-hot is
    built). Returns (C, Nh)."""
    return F.embedding_bag(codes + offsets, weight_rows, mode="sum").add_(hbias)


def draw_hiddens(codes: Tensor, weight_rows: Tensor, hbias: Tensor, offsets: Tensor,
                 beta: float, generator: Optional[torch.Generator],  # noqa: UP045
                 ) -> tuple[Tensor, Tensor]:
    """h ~ p_beta(h | v) for int64 codes (C, L) (arguments as in hidden_inputs); returns
    (h as bool, p(h = 1 | v)), each (C, Nh)."""
    mag = hidden_inputs(codes, weight_rows, hbias, offsets)
    if beta != 1.0:
        mag.mul_(beta)
    mag.sigmoid_()
    u = torch.rand(mag.shape, generator=generator, device=mag.device, dtype=mag.dtype)
    return torch.lt(u, mag), mag


def int8_gibbs_sweeps(codes: Tensor, sweeps: int, weight_rows: Tensor, hbias: Tensor,
                      offsets: Tensor, planes: Tensor, unit: Tensor, bias: Tensor,
                      num_states: int, beta: float, generator: torch.Generator,
                      eps: float = _FLOAT32.eps, tiny: float = _FLOAT32.tiny,
                      largest: float = _FLOAT32.max) -> Tensor:
    """`sweeps` block-Gibbs sweeps v -> h -> v of codes (C, L) int64, float32 on the CPU.

    weight_rows, hbias and offsets are those of draw_hiddens; planes, unit and bias those of
    the Int8DigitPlanes of the visible logits in bits, beta and log2(e) folded in, with the
    rows in state-major order (row a * L + i is state a of site i), so that the product's
    (q * L, C) result is the (q, L * C) columns of draw_columns_base2. eps, tiny and largest are
    float32's (defaults, as TorchScript reads no module globals).
    """
    C, L = codes.shape[0], codes.shape[1]
    for _ in range(sweeps):
        hiddens = draw_hiddens(codes, weight_rows, hbias, offsets, beta, generator)[0]
        logits = digit_product(as_columns(hiddens), planes, unit, bias).view(num_states, L * C)
        codes = draw_columns_base2(logits, generator, eps, tiny, largest).view(L, C).T
        codes = codes.contiguous()
    return codes


@functools.cache
def int8_products_work() -> bool:
    """Whether torch._int_mm multiplies int8 matrices exactly on this machine's CPU (probed
    once); where it does not, sweeps take the float32 product."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2, (17, 37), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (37, 11), generator=g, dtype=torch.int8)
    try:
        return torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long())
    except (AttributeError, NotImplementedError, RuntimeError):
        return False


@functools.cache
def compiled(kernel: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`kernel` compiled by TorchScript (its loop then runs without the GIL), or `kernel` itself
    where this torch has no TorchScript."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.jit.script(kernel)
        except (AttributeError, RuntimeError):
            return kernel
