"""The stored per-record values of a row of logits, exact at any logit scale.

For logits ``x`` [N, K] and gold labels ``g`` [N], per row:

- ``pred``: argmax of ``x``, ties to the lowest class index;
- ``p_gold``: softmax(x)[g];
- ``margin``: x[g] - max over j != g of x[j] (0 when K = 1);
- ``loss``: -log p_gold (cross-entropy);
- ``el2n``: ||softmax(x) - onehot(g)||_2.

Two twins of one algorithm: :func:`batch_values` (torch, on the logits' device, no host sync;
the recorder) and :func:`per_example_values` (NumPy; importers and tests). Both work in float32
after an exact conversion of the logits to float32 (float16/bfloat16 widen exactly), in
*max-shifted space*: with ``m`` the row maximum and ``s = x - m`` (so ``s <= 0``, and
``s[pred] = 0``)::

    e = exp(s)                      every e <= 1, no overflow
    E = sum over j != g of e[j]     the other classes' mass
    D = e[g] + E                    the softmax denominator
    p_gold = e[g] / D               1 - p_gold = E / D (no cancellation near p_gold = 1)
    loss = log1p(E)      if s[g] == 0 (gold is a row maximum: e[g] = 1 exactly, D = 1 + E)
           log(D) - s[g] otherwise  (then loss >= log 2: a sum of two non-negative terms)
    el2n = sqrt(E^2 + sum over j != g of e[j]^2) / D
    margin = s[g] - max over j != g of s[j]

Every operand is bounded and every step is a sum of same-signed terms, so each value carries a
few float32 roundings relative to itself: the float64 result of the same logits is reproduced to
about 1e-7 whatever the logit scale. The naive ``logsumexp(x) - x[g]`` instead rounds at the
scale of ``x`` itself (an error of ~1e-5 in p_gold at logit scale 100).

``margin`` is correctly rounded: one of ``s[g]`` and the largest other ``s[j]`` is exactly 0 (the
row maximum is either gold or another class), so it is a single float32 rounding of the exact
difference of the two logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: The value columns, in storage order.
VALUE_COLUMNS = ("p_gold", "pred", "margin", "loss", "el2n")


def batch_values(logits: torch.Tensor, gold: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example values of logits [N, K] and gold labels [N], on the logits' device.

    float32 results (``pred`` int32), computed as the module docstring says; pure tensor ops, so
    nothing is synchronised with the host. Non-finite logits give non-finite values (the
    recorder refuses them; see ``datamap.dynamics.accumulate``).
    """
    import torch  # here, not at the top: importers of the NumPy twin need no torch

    x = logits.detach().float()
    index = gold.detach().long().unsqueeze(1)
    top, pred = x.max(dim=1, keepdim=True)  # the first maximal index on ties
    s = x - top
    s_gold = s.gather(1, index).squeeze(1)
    s_others = s.scatter(1, index, -torch.inf)
    e_others = s_others.exp()
    mass = e_others.sum(dim=1)
    e_gold = s_gold.exp()
    denom = e_gold + mass
    loss = torch.where(s_gold == 0, mass.log1p(), denom.log() - s_gold)
    if x.shape[1] > 1:
        margin = s_gold - s_others.amax(dim=1)
    else:
        margin = torch.zeros_like(s_gold)
    return {
        "p_gold": e_gold / denom,
        "pred": pred.squeeze(1).to(torch.int32),
        "margin": margin,
        "loss": loss,
        "el2n": (mass * mass + (e_others * e_others).sum(dim=1)).sqrt() / denom,
    }


def per_example_values(logits: np.ndarray, gold: np.ndarray) -> dict[str, np.ndarray]:
    """The NumPy twin of :func:`batch_values`: the same values, by the same steps, in float32.

    ``logits`` [N, K] (any float dtype that widens exactly to float32, or float64 which is
    rounded to float32 first), ``gold`` [N] class indices. Returns float32 arrays (``pred``
    int32) named as in :data:`VALUE_COLUMNS`.
    """
    x = np.asarray(logits, dtype=np.float32)
    index = np.asarray(gold, dtype=np.int64)[:, None]
    pred = x.argmax(axis=1)  # the first maximal index on ties
    top = np.take_along_axis(x, pred[:, None], axis=1)
    s = x - top
    s_gold = np.take_along_axis(s, index, axis=1)[:, 0]
    s_others = s.copy()
    np.put_along_axis(s_others, index, -np.inf, axis=1)
    e_others = np.exp(s_others)
    mass = e_others.sum(axis=1)
    e_gold = np.exp(s_gold)
    denom = e_gold + mass
    loss = np.where(s_gold == 0, np.log1p(mass), np.log(denom) - s_gold)
    if x.shape[1] > 1:
        margin = s_gold - s_others.max(axis=1)
    else:
        margin = np.zeros_like(s_gold)
    return {
        "p_gold": (e_gold / denom).astype(np.float32),
        "pred": pred.astype(np.int32),
        "margin": margin.astype(np.float32),
        "loss": loss.astype(np.float32),
        "el2n": (np.sqrt(mass * mass + (e_others * e_others).sum(axis=1)) / denom)
        .astype(np.float32),
    }
