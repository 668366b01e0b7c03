"""Effective pairwise couplings of a Potts RBM's marginal distribution over the visibles.

The marginal of a Potts-Bernoulli RBM is p(v) ∝ exp(-F(v)) with

    -F(v) = sum_i vbias[i, v_i] + sum_mu softplus(hbias[mu] + sum_k W[k, v_k, mu]),

a generalised Potts model with interactions of every order. Its pairwise part is defined by
second differences of -F in sites i and j around background configurations v (Decelle,
Navas Gómez, Seoane 2025, "Inferring higher-order couplings with neural networks"): in the
zero-sum gauge,

    J_ij(a, b) = < P[ -F(v | v_i = a, v_j = b) ] >_v,

where P double-centres a q x q table (subtracts its row and column means and adds back the
grand mean) and <.>_v averages over background configurations (their sites i and j replaced).
vbias only adds terms in a or b alone, which P removes, so only the softplus terms count:

    J_ij(a, b) = sum_mu < P[ softplus(x_mu^{ij}(v) + W[i, a, mu] + W[j, b, mu]) ] >_v,
    x_mu^{ij}(v) = hbias[mu] + sum_{k != i, j} W[k, v_k, mu].

Three ways to evaluate it (`METHODS`):

- `background`: the average over given background sequences (data or model samples), exact
  for those backgrounds. Averaged over all q^L configurations it is the pairwise term of the
  orthogonal (ANOVA) expansion of log p, which is the least-squares pairwise Potts fit of log p
  in the zero-sum gauge; for a model whose hidden units each touch at most two sites it is the
  exact coupling of p whatever the backgrounds.
- `gaussian`: the large-N form of the same paper: x_mu^{ij} is treated as a Gaussian whose mean
  and variance are those of the hidden input over the backgrounds, with the mean contributions
  of sites i and j removed; the expectation is a Gauss-Hermite quadrature.
- `tubiana`: the second-order expansion of Tubiana, Cocco, Monasson (eLife 2019),
  J_ij(a, b) = sum_mu <Var(h_mu | v)>_v W[i, a, mu] W[j, b, mu], gauge-fixed. Var(h | v) =
  sigma(I)(1 - sigma(I)) is softplus''(I) at the hidden input I.

Couplings are (L, L, q, q) float64 arrays with J[i, j] = J[j, i].T and a zero diagonal; fields
(L, q) complete the pairwise model, in the same zero-sum gauge.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from rbmflow.model.rbm import PottsRBM

METHODS = ("gaussian", "background", "tubiana")


def double_centre(table: Tensor) -> Tensor:
    """Zero-sum gauge of q x q tables (last two dimensions): row and column sums become 0."""
    return (table - table.mean(-1, keepdim=True) - table.mean(-2, keepdim=True)
            + table.mean((-2, -1), keepdim=True))


def zero_sum_gauge(couplings: np.ndarray, fields: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Any pairwise Potts model (J (L, L, q, q), h (L, q)) to the zero-sum gauge, p unchanged.

    J[i, j] must equal J[j, i].T. The shifts of each J_ij go into the fields of i and j
    (constants are dropped).
    """
    J = np.asarray(couplings, dtype=np.float64)
    row = J.mean(3, keepdims=True)  # (L, L, q, 1): depends on a only
    col = J.mean(2, keepdims=True)  # (L, L, 1, q): depends on b only
    grand = J.mean((2, 3), keepdims=True)
    J0 = J - row - col + grand
    if fields is None:
        return J0, None
    h = np.asarray(fields, dtype=np.float64).copy()
    # sum_{j != i} (row_ij(a) - grand_ij) enters h_i(a); col of (j, i) is row of (i, j).
    h += (row[..., 0] - grand[..., 0]).sum(1)
    h -= h.mean(1, keepdims=True)
    return J0, h


def _hidden_weights(model: PottsRBM) -> Tensor:
    return model.weight_matrix.to(torch.float64)


def _weights_for(backgrounds: Tensor, weights: Tensor | None) -> Tensor:
    n = backgrounds.shape[0]
    if weights is None:
        w = torch.ones(n, dtype=torch.float64, device=backgrounds.device)
    else:
        w = weights.to(device=backgrounds.device, dtype=torch.float64)
    if w.shape != (n,) or not float(w.sum()) > 0:
        raise ValueError(f"weights must be (n,) with a positive sum, got {tuple(w.shape)}")
    return w / w.sum()


def _site_contributions(W: Tensor, backgrounds: Tensor) -> Tensor:
    """W[k, v_k, :] for every background and site: (n, L, Nh)."""
    L = W.shape[0]
    return W[torch.arange(L, device=W.device), backgrounds.long()]


def couplings_background(model: PottsRBM, backgrounds: Tensor, weights: Tensor | None = None,
                         chunk: int = 1 << 24) -> np.ndarray:
    """Exact second differences of -F averaged over background codes (n, L); (L, L, q, q).

    `weights` (n,) weight the backgrounds (None: equal). Cost n L^2 q^2 Nh / 2 softplus
    evaluations, in chunks of about `chunk` numbers.
    """
    W = _hidden_weights(model)
    L, q, nh = W.shape
    c = model.hbias.to(torch.float64)
    w = _weights_for(backgrounds, weights)
    contrib = _site_contributions(W, backgrounds)  # (n, L, Nh)
    total = contrib.sum(1) + c  # (n, Nh)
    J = torch.zeros(L, L, q, q, dtype=torch.float64, device=W.device)
    n = backgrounds.shape[0]
    per_background = q * q * nh
    for i in range(L - 1):
        js = torch.arange(i + 1, L, device=W.device)
        step = max(1, chunk // (per_background * len(js)))
        acc = torch.zeros(len(js), q, q, dtype=torch.float64, device=W.device)
        for start in range(0, n, step):
            sl = slice(start, start + step)
            x = total[sl, None, :] - contrib[sl, i, None, :] - contrib[sl][:, js, :]  # (b, J, Nh)
            arg = (x[:, :, None, None, :] + W[i][None, None, :, None, :]
                   + W[js][None, :, None, :, :])  # (b, J, q, q, Nh)
            table = F.softplus(arg).sum(-1)  # (b, J, q, q)
            acc += (double_centre(table) * w[sl, None, None, None]).sum(0)
        J[i, js] = acc
        J[js, i] = acc.transpose(-1, -2)
    return J.cpu().numpy()


def _hidden_inputs(model: PottsRBM, backgrounds: Tensor, batch: int = 4096) -> Tensor:
    """hbias + sum_k W[k, v_k, :] for each background, (n, Nh), in batches."""
    return torch.cat([model.hidden_inputs(backgrounds[s:s + batch])
                      for s in range(0, backgrounds.shape[0], batch)])


def _input_moments(model: PottsRBM, backgrounds: Tensor, w: Tensor) -> tuple[Tensor, Tensor,
                                                                             Tensor]:
    """Weighted mean (Nh,) and variance (Nh,) of the hidden inputs, and each site's mean
    contribution sum_a f_k(a) W[k, a, :] (L, Nh) under the backgrounds' frequencies f."""
    W = _hidden_weights(model)
    L, q, _ = W.shape
    inputs = _hidden_inputs(model, backgrounds)
    mean = (w[:, None] * inputs).sum(0)
    var = (w[:, None] * (inputs - mean) ** 2).sum(0)
    flat = backgrounds.long() + torch.arange(L, device=backgrounds.device) * q  # (n, L)
    freqs = torch.zeros(L * q, dtype=torch.float64, device=W.device).index_add_(
        0, flat.reshape(-1), w.repeat_interleave(L)).view(L, q)
    site_mean = torch.einsum("la,lam->lm", freqs, W)
    return mean, var, site_mean


def couplings_gaussian(model: PottsRBM, backgrounds: Tensor, weights: Tensor | None = None,
                       nodes: int = 7, chunk: int = 1 << 20,
                       work_dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Large-N effective couplings: x_mu^{ij} ~ N(m_mu - <W_i>_mu - <W_j>_mu, s_mu^2) with m, s^2
    the mean and variance of the hidden input over the backgrounds; `nodes` Gauss-Hermite
    points. (L, L, q, q). `work_dtype`: precision of the softplus tables (float32 halves the
    time on large models; sums are float64).

    Blockwise: for site i, node z and a block of sites j, one (block, q, q, Nh) table of
    softplus(m - <W_i> - <W_j> + z s + W[i, a] + W[j, b]) of about `chunk` numbers (a few MB,
    so it stays in cache), summed over the hidden units at once."""
    W = _hidden_weights(model)
    L, q, nh = W.shape
    w = _weights_for(backgrounds, weights)
    mean, var, site_mean = _input_moments(model, backgrounds, w)
    z, zw = np.polynomial.hermite_e.hermegauss(nodes)  # probabilists': weight exp(-z^2/2)
    zw = (zw / math.sqrt(2 * math.pi)).tolist()
    shifts = (torch.as_tensor(z, dtype=torch.float64, device=W.device)[:, None]
              * var.sqrt()[None, :])  # (nodes, Nh)
    # x^{ij} + W[j, b] = (mean - <W_i> - <W_j> + W[j, b]); the i-dependent part joins W[i, a].
    right = (W + (mean - site_mean)[:, None, :]).to(work_dtype)  # (L, q, Nh), per j
    left = (W - site_mean[:, None, :])[:, None] + shifts[None, :, None, :]  # (L, nodes, q, Nh)
    left = left.to(work_dtype)
    # softplus(x + y) = log1p(e^x e^y): the exponentials are taken once per site, the blocks
    # need a product and a log1p, unless e^(x + y) could overflow.
    limit = math.log(torch.finfo(work_dtype).max) - 8
    exp_right = right.exp() if float(right.max()) + float(left.max()) < limit else None
    J = torch.zeros(L, L, q, q, dtype=torch.float64, device=W.device)
    step = max(1, chunk // (q * q * nh))
    for i in range(L - 1):
        exp_left = left[i].exp() if exp_right is not None else None
        for start in range(i + 1, L, step):
            sub = slice(start, min(start + step, L))
            table = torch.zeros(sub.stop - start, q, q, dtype=torch.float64, device=W.device)
            for k in range(nodes):
                if exp_left is not None and exp_right is not None:
                    terms = (exp_left[k][None, :, None, :] * exp_right[sub][:, None]).log1p_()
                else:
                    terms = F.softplus(left[i, k][None, :, None, :] + right[sub][:, None])
                table += zw[k] * terms.sum(-1)
            table = double_centre(table)
            J[i, sub] = table
            J[sub, i] = table.transpose(-1, -2)
    return J.cpu().numpy()


def couplings_tubiana(model: PottsRBM, backgrounds: Tensor,
                      weights: Tensor | None = None) -> np.ndarray:
    """sum_mu <Var(h_mu | v)>_v W[i, a, mu] W[j, b, mu] in the zero-sum gauge; (L, L, q, q)."""
    W = _hidden_weights(model)
    L, q, nh = W.shape
    w = _weights_for(backgrounds, weights)
    p = torch.sigmoid(_hidden_inputs(model, backgrounds))
    variance = (w[:, None] * p * (1 - p)).sum(0)  # (Nh,)
    Wc = W - W.mean(1, keepdim=True)
    flat = Wc.reshape(L * q, nh)
    J = ((flat * variance) @ flat.T).reshape(L, q, L, q).permute(0, 2, 1, 3).contiguous()
    J[torch.arange(L), torch.arange(L)] = 0
    return J.cpu().numpy()


def effective_couplings(model: PottsRBM, backgrounds: Tensor, weights: Tensor | None = None,
                        method: str = "gaussian",
                        work_dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Effective couplings (L, L, q, q), zero-sum gauge, by `method` (one of METHODS);
    `work_dtype` for the Gaussian method's softplus tables."""
    model = model.to(dtype=torch.float64)
    if method == "background":
        return couplings_background(model, backgrounds, weights)
    if method == "gaussian":
        return couplings_gaussian(model, backgrounds, weights, work_dtype=work_dtype)
    if method == "tubiana":
        return couplings_tubiana(model, backgrounds, weights)
    raise ValueError(f"unknown coupling method {method!r}; choose from {METHODS}")


def effective_fields(model: PottsRBM, backgrounds: Tensor, weights: Tensor | None = None,
                     couplings: np.ndarray | None = None) -> np.ndarray:
    """Zero-sum fields h (L, q) that complete the couplings J into a pairwise Potts model.

    The single-site differences < -F(v | v_i = a) >_v, centred over a, hold h_i(a) plus the
    mean field of the couplings, sum_{j != i} sum_b f_j(b) J_ij(a, b), with f_j the
    backgrounds' (weighted) frequencies; that term is subtracted. `couplings` (L, L, q, q),
    zero-sum gauge: the J the fields go with (None: exact second differences around the same
    backgrounds). For a model whose hidden units each touch at most two sites, (J, h) is then
    the exact Potts model of p for any backgrounds; averaged over all q^L configurations it
    is the one-site term of the orthogonal expansion of log p.
    """
    model = model.to(dtype=torch.float64)
    W = model.weight_matrix
    L, q, nh = W.shape
    w = _weights_for(backgrounds, weights)
    if couplings is None:
        couplings = couplings_background(model, backgrounds, weights)
    total = _hidden_inputs(model, backgrounds)  # (n, Nh)
    h = torch.empty(L, q, dtype=torch.float64, device=W.device)
    for i in range(L):
        x = total - W[i, backgrounds[:, i].long()]  # (n, Nh)
        table = F.softplus(x[:, None, :] + W[i][None]).sum(-1)  # (n, q)
        h[i] = (w[:, None] * table).sum(0) + model.vbias[i]
    h -= h.mean(1, keepdim=True)
    freqs = torch.einsum("n,nla->la", w, F.one_hot(backgrounds.long(), q).to(torch.float64))
    for i in range(L):  # J_ii = 0; one row of J at a time, no permuted copy of J
        J_i = torch.as_tensor(couplings[i], dtype=torch.float64, device=W.device)
        h[i] -= torch.einsum("jab,jb->a", J_i, freqs)
    h -= h.mean(1, keepdim=True)
    return h.cpu().numpy()


# -- contact scores ---------------------------------------------------------------------------


def frobenius_scores(couplings: np.ndarray, exclude_state: int | None = 0) -> np.ndarray:
    """||J_ij|| (L, L) over the states, gauge-fixed to zero sum first, `exclude_state` (the
    gap, code 0) left out of the norm; zero diagonal."""
    couplings = np.asarray(couplings)
    L, _, q, _ = couplings.shape
    keep = [a for a in range(q) if a != exclude_state]
    scores = np.empty((L, L), dtype=np.float64)
    for i in range(L):  # one row of pairs at a time: no temporary of the size of J
        J, _ = zero_sum_gauge(couplings[i:i + 1])
        if exclude_state is not None:
            J = J[:, :, keep][:, :, :, keep]
        scores[i] = np.sqrt((J ** 2).sum((2, 3)))[0]
    np.fill_diagonal(scores, 0.0)
    return scores


def apc(scores: np.ndarray) -> np.ndarray:
    """Average-product correction S_ij - S_i. S_.j / S_.. (means over j != i); zero diagonal."""
    S = np.asarray(scores, dtype=np.float64)
    L = S.shape[0]
    off = ~np.eye(L, dtype=bool)
    row = (S * off).sum(1) / (L - 1)
    total = (S * off).sum() / (L * (L - 1))
    corrected = S - np.outer(row, row) / total
    np.fill_diagonal(corrected, 0.0)
    return corrected


def contact_scores(couplings: np.ndarray, exclude_state: int | None = 0) -> np.ndarray:
    """APC-corrected Frobenius norms (L, L) of the zero-sum couplings, gaps excluded."""
    return apc(frobenius_scores(couplings, exclude_state))


def ranked_pairs(scores: np.ndarray) -> list[tuple[int, int, float]]:
    """(i, j, score) for all i < j, 1-based, by descending score (ties by i, then j)."""
    L = scores.shape[0]
    i, j = np.triu_indices(L, k=1)
    values = scores[i, j]
    order = np.lexsort((j, i, -values))
    return [(int(i[k]) + 1, int(j[k]) + 1, float(values[k])) for k in order]
