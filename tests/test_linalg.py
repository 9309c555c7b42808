import pytest
import torch

from mrp_gpu.linalg import Precision, gram, precision


def unexplained(gram, ridge=1e-3):
    """The share of each channel the others cannot rebuild, nothing dropped."""
    return Precision(gram, ridge).share()


def _features(seed=0):
    """Five channels: 0..2 independent, 3 = 0 + 1 (rebuilt exactly), 4 = 2 + a little noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 400, generator=g, dtype=torch.float64)
    rows = torch.cat([x, (x[0] + x[1])[None], (x[2] + 0.3 * torch.randn(400, generator=g, dtype=torch.float64))[None]])
    return rows


def test_unexplained_share_is_what_least_squares_leaves():
    f = _features()
    share = unexplained(f @ f.T, ridge=1e-9)
    assert share[3] < 1e-6  # an exact combination of two others
    r = f[4]  # residual of channel 4 regressed on the rest, relative to its energy
    others = f[[0, 1, 2, 3]]
    coef = torch.linalg.lstsq(others.T, r).solution
    expected = ((r - others.T @ coef).pow(2).sum() / r.pow(2).sum()).item()
    assert share[4].item() == pytest.approx(expected, rel=1e-6)
    assert unexplained(torch.eye(4)).allclose(torch.full((4,), 1.001, dtype=torch.float64))  # ridge adds 1e-3


def test_precision_after_drops_equals_a_fresh_inverse():
    f = _features(1)
    gram = f @ f.T
    p = Precision(gram)
    p.drop(1)
    p.drop(3)
    keep = [0, 2, 4]
    fresh = precision(gram[keep][:, keep]).diagonal()
    assert torch.allclose(p.diag[keep], fresh, atol=1e-8) and p.diag[1] == 0 and p.diag[3] == 0
    share = p.share()
    assert torch.allclose(share[keep], unexplained(gram[keep][:, keep])) and share[1] == 0




def test_gram_is_exactly_symmetric_and_equals_the_product():
    x = torch.randn(600, 37, generator=torch.Generator().manual_seed(0))
    g = gram(x, block=64)
    assert torch.equal(g, g.T)
    torch.testing.assert_close(g, x @ x.T, rtol=1e-5, atol=1e-4)
