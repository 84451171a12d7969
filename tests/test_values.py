"""The stored per-record values against a float64 computation of the same logits, at any scale.

Tolerances (float32 carries ~6e-8 relative precision):

- ``p_gold``, ``el2n`` (both in [0, sqrt 2]): 1e-6 absolute. Measured <= 1e-7 and 3.2e-7.
- ``loss`` (from ~1e-40 to thousands): 1e-6 relative, plus 1e-12 absolute for losses so small
  that their relative error -- the float32 rounding of ``x_j - max x``, about |x_j - max x| *
  6e-8, amplified by exp -- no longer matters (p_gold is then 1 to within 1e-12). Measured
  relative errors <= 4e-7 above 1e-12.
- ``margin``: one float32 rounding of the exact difference (relative 2**-24; allowed 2**-23).
- ``pred``: identical (argmax ties go to the lowest class index).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamap.dynamics.values import batch_values, per_example_values

SCALES = (1, 30, 100, 1000)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def reference(logits: np.ndarray, gold: np.ndarray) -> dict[str, np.ndarray]:
    """The values in float64, textbook formulas (log1p where the loss is tiny)."""
    x = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(x))
    pred = x.argmax(axis=1)
    e = np.exp(x - x[rows, pred][:, None])
    total = e.sum(axis=1)
    probs = e / total[:, None]
    rest = total - 1.0  # the classes other than pred (exact enough in float64 unless tiny:)
    e_rest = e.copy()
    e_rest[rows, pred] = 0.0
    rest = np.where(rest < 1e-3, e_rest.sum(axis=1), rest)
    loss = np.log1p(rest) - (x[rows, gold] - x[rows, pred])
    others = x.copy()
    others[rows, gold] = -np.inf
    diff = probs.copy()
    diff[rows, gold] -= 1.0
    return {
        "p_gold": probs[rows, gold],
        "pred": pred,
        "margin": x[rows, gold] - others.max(axis=1) if x.shape[1] > 1 else np.zeros(len(x)),
        "loss": loss,
        "el2n": np.sqrt((diff * diff).sum(axis=1)),
    }


def random_logits(scale: float, dtype: torch.dtype, seed: int = 0):
    """Logits at ``scale`` in ``dtype``, with exact ties and near-certain rows mixed in."""
    rng = np.random.default_rng(seed)
    n, k = 3000, 10
    x = rng.normal(size=(n, k)).astype(np.float32) * scale
    gold = rng.integers(0, k, size=n)
    x[:50, 3] = x[:50, 7] = x[:50].max(axis=1) + scale  # ties for the maximum
    x[50:100, :] = x[50:100, :1]  # all classes equal
    x[100:200, gold[100:200]] = scale * 20.0  # gold far ahead: p_gold ~ 1, loss tiny
    x[200:300, gold[200:300]] = -scale * 20.0  # gold far behind: p_gold ~ 0, loss large
    return torch.from_numpy(x).to(dtype), torch.from_numpy(gold)


def assert_matches(values: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(values["pred"], ref["pred"])
    np.testing.assert_allclose(values["p_gold"], ref["p_gold"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(values["el2n"], ref["el2n"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(values["loss"], ref["loss"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(values["margin"], ref["margin"], rtol=2**-23, atol=0)
    for name, array in values.items():
        assert array.dtype == (np.int32 if name == "pred" else np.float32), name


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_values_match_float64(scale, dtype):
    logits, gold = random_logits(scale, dtype)
    ref = reference(logits.float().numpy(), gold.numpy())
    assert_matches({k: v.numpy() for k, v in batch_values(logits, gold).items()}, ref)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_numpy_twin_matches_float64(scale, dtype):
    logits, gold = random_logits(scale, dtype)
    x = logits.float().numpy()  # float16/bfloat16 widen exactly
    assert_matches(per_example_values(x, gold.numpy()), reference(x, gold.numpy()))


def test_ties_go_to_the_lowest_class():
    logits = torch.tensor([[0.0, 2.0, 2.0], [1.0, 1.0, 1.0], [5.0, -1.0, 5.0]])
    gold = torch.tensor([2, 1, 0])
    for values in (batch_values(logits, gold), per_example_values(logits.numpy(), gold.numpy())):
        assert np.asarray(values["pred"]).tolist() == [1, 0, 0]
        assert np.asarray(values["margin"]).tolist() == [0.0, 0.0, 0.0]


def test_values_by_hand():
    logits = np.array([[0.0, np.log(3.0), 0.0], [2.0, 2.0, 1.0]], dtype=np.float32)
    v = per_example_values(logits, np.array([1, 1]))
    np.testing.assert_allclose(v["p_gold"], [0.6, np.e**2 / (2 * np.e**2 + np.e)], rtol=1e-6)
    assert v["pred"].tolist() == [1, 0]  # tie between classes 0 and 1 -> lowest index
    np.testing.assert_allclose(v["margin"], [np.log(3.0), 0.0], atol=1e-6)
    np.testing.assert_allclose(v["loss"], -np.log(v["p_gold"]), rtol=1e-6)
    np.testing.assert_allclose(v["el2n"][0], np.sqrt(0.04 + 0.16 + 0.04), rtol=1e-6)


def test_one_class():
    for values in (batch_values(torch.tensor([[3.0], [-2.0]]), torch.tensor([0, 0])),
                   per_example_values(np.array([[3.0], [-2.0]]), np.array([0, 0]))):
        assert {k: np.asarray(v).tolist() for k, v in values.items()} == {
            "p_gold": [1.0, 1.0], "pred": [0, 0], "margin": [0.0, 0.0], "loss": [0.0, 0.0],
            "el2n": [0.0, 0.0]}
