import numpy as np
import pytest
import torch

from mrp_gpu.errors import MRPError
from mrp_gpu.redundancy import Precision, Rebuild, largest_community, most_replaceable, precision


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


def test_error_rule_weighs_the_unrebuilt_share_by_salience():
    f = _features()
    gram = f @ f.T
    sim = gram / torch.outer(gram.diagonal().sqrt(), gram.diagonal().sqrt())
    norms = np.ones(5)
    members = np.array([2, 3, 4])
    share = unexplained(gram).numpy()  # rebuilt from every channel
    assert most_replaceable("error", members, norms, sim, gram, loss=share)[0] == 3
    loud3 = np.ones(5)
    loud3[3] = 1e9  # exactly rebuilt, but so loud that the ridge's tiny leftover still counts most
    assert most_replaceable("error", members, norms, sim, gram, loss=share * loud3)[0] != 3
    # rebuilt only from the community: 3 = 0 + 1 is lost once 0 and 1 are not survivors it may use
    alone = np.zeros(5)
    alone[members] = unexplained(gram[members][:, members]).numpy()
    assert most_replaceable("error", members, norms, sim, gram, loss=alone)[0] == 4
    with pytest.raises(ValueError, match="needs each channel's loss"):
        most_replaceable("error", members, norms, sim, gram)


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


def test_largest_community_ties_go_to_the_lowest_label():
    assert largest_community(np.array([1, 0, 1, 0, 2])).tolist() == [1, 3]  # label 0, not 1


def _refit_loss(x, w, gone_cols):
    """What least squares leaves of ``y = x w^T`` when the columns ``gone_cols`` go, each output
    relative to its variance (``x`` centred)."""
    y = x @ w.T
    keep = [c for c in range(x.shape[1]) if c not in gone_cols]
    coef = torch.linalg.lstsq(x[:, keep], y).solution
    return ((y - x[:, keep] @ coef).pow(2).sum(0) / y.pow(2).sum(0)).sum().item()


def test_rebuild_loss_is_what_the_refit_leaves_and_drops_update_it():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2000, 6, generator=g, dtype=torch.float64)
    # 4 channels of 2 columns each (a 2-tap kernel) and 2 columns of another group; channel 2
    # is nearly channel 0 + channel 1, so the refit rebuilds it well
    x = torch.cat([base[:, :4], base[:, :2] + base[:, 2:4] + 0.05 * base[:, 4:6],
                   torch.randn(2000, 4, generator=g, dtype=torch.float64)], 1)
    x = x - x.mean(0)
    w = torch.randn(3, 10, generator=g, dtype=torch.float64)
    cols = np.arange(8).reshape(4, 2)
    state = Rebuild([(x.T @ x / len(x), w, np.arange(4), cols)], size=5, ridge=1e-9)
    loss = state.loss()
    for c in range(4):
        assert loss[c] == pytest.approx(_refit_loss(x, w, cols[c].tolist()), rel=1e-5)
    assert loss[4] == np.inf  # read by no dense consumer: the norm decides
    assert np.argmin(loss) == 2
    state.drop(2)  # the others' loss is now what removing them too adds
    after = state.loss()
    assert after[2] == 0
    for c in (0, 1, 3):
        both = _refit_loss(x, w, cols[[2, c]].ravel().tolist())
        assert after[c] == pytest.approx(both - _refit_loss(x, w, cols[2].tolist()), rel=1e-4)
    members = np.array([0, 1, 3])
    assert most_replaceable("rebuild", members, np.ones(5), loss=after)[0] == members[np.argmin(after[members])]


@pytest.mark.parametrize("fold", [0.01, 0.25, 10.0])  # fold at every removal, now and then, never
def test_rebuild_after_many_drops_is_the_refit_on_the_survivors(fold):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3000, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g,
                                                                              dtype=torch.float64)
    x = x - x.mean(0)
    w = torch.randn(4, 12, generator=g, dtype=torch.float64)
    w0 = w.clone()
    cols = np.arange(12).reshape(6, 2)
    state = Rebuild([(x.T @ x / len(x), w, np.arange(6), cols)], size=6, ridge=1e-12, fold=fold)
    gone = []
    for c in (4, 1, 5):
        state.drop(c)
        gone.append(c)
        loss = state.loss()
        for k in set(range(6)) - set(gone):
            lost = cols[gone + [k]].ravel().tolist()
            assert loss[k] == pytest.approx(_refit_loss(x, w0, lost) - _refit_loss(x, w0, cols[gone].ravel().tolist()),
                                            rel=1e-6, abs=1e-9)
    assert torch.equal(w, w0)  # the caller's weights are never written


def test_rebuild_survives_a_covariance_indefinite_beyond_the_first_ridge():
    # inputs of very unequal scale, accumulated with an error that leaves an eigenvalue below
    # -ridge * mean variance: the ridge is raised until the factorisation holds
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([1e6, 1.0, 1.0, 1.0, 1.0, -500.0], dtype=torch.float64)) @ q.T
    assert torch.linalg.cholesky_ex(cov + 1e-3 * cov.diagonal().mean() * torch.eye(6, dtype=cov.dtype))[1] != 0
    state = Rebuild([(cov, torch.ones(2, 6, dtype=torch.float64), np.arange(3), np.arange(6).reshape(3, 2))], size=3)
    assert np.isfinite(state.loss()).all()
    with pytest.raises(MRPError, match="stays indefinite"):
        Rebuild([(torch.full((2, 2), float("nan"), dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64),
                  np.arange(1), np.arange(2).reshape(1, 2))], size=1)
