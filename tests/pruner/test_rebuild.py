import numpy as np
import pytest
import torch

from mrp_gpu.errors import MRPError
from mrp_gpu.pruner.rebuild import Rebuild
from mrp_gpu.pruner.rules import RULES, RuleInputs


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
    ranked = RULES["rebuild"].rank(members, RuleInputs(np.ones(5), loss=after))
    assert ranked[0] == members[np.argmin(after[members])]


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
