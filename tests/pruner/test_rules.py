import numpy as np
import pytest
import torch

from mrp_gpu.linalg import Precision
from mrp_gpu.pruner.rules import RULES, Rule, RuleInputs, largest_community, register


def _features(seed=0):
    """Five channels: 0..2 independent, 3 = 0 + 1 (rebuilt exactly), 4 = 2 + a little noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 400, generator=g, dtype=torch.float64)
    rows = torch.cat([x, (x[0] + x[1])[None], (x[2] + 0.3 * torch.randn(400, generator=g, dtype=torch.float64))[None]])
    return rows


def _rank(rule, members, norms, loss=None, gram=None):
    return RULES[rule].rank(members, RuleInputs(norms, gram=gram, loss=loss))


def test_error_rule_weighs_the_unrebuilt_share_by_salience():
    f = _features()
    gram = f @ f.T
    norms = np.ones(5)
    members = np.array([2, 3, 4])
    share = Precision(gram).share().numpy()  # rebuilt from every channel
    assert _rank("error-in-community", members, norms, loss=share)[0] == 3
    loud3 = np.ones(5)
    loud3[3] = 1e9  # exactly rebuilt, but so loud that the ridge's tiny leftover still counts most
    assert _rank("error-in-community", members, norms, loss=share * loud3)[0] != 3
    # rebuilt only from the community: 3 = 0 + 1 is lost once 0 and 1 are not survivors it may use
    alone = np.zeros(5)
    alone[members] = Precision(gram[members][:, members]).share().numpy()
    assert _rank("error-in-community", members, norms, loss=alone)[0] == 4
    with pytest.raises(ValueError, match="needs each channel's loss"):
        _rank("error-in-community", members, norms)


def test_reconstruction_takes_the_member_its_community_rebuilds_best():
    f = _features()
    members = np.arange(5)
    # 3 = 0 + 1 exactly; 4 is 2 plus noise: 3 goes first, whatever the norms say
    norms = np.array([1.0, 1.0, 1.0, 9.0, 1.0])
    assert _rank("reconstruction", members, norms, gram=f @ f.T)[0] == 3


def test_norm_rule_and_ties_go_to_the_smaller_norm():
    norms = np.array([3.0, 1.0, 2.0, 1.0])
    assert _rank("norm-in-community", np.array([0, 2, 3]), norms).tolist() == [3, 2, 0]
    same = np.zeros(4)  # equal losses: the norm decides
    assert _rank("rebuild", np.arange(4), norms, loss=same).tolist() == [1, 3, 2, 0]


def test_candidates_are_the_largest_community_or_every_live_channel():
    pos = np.array([0, 2, 3, 5, 6])
    labels = np.array([1, 0, 1, 1, 0])
    assert RULES["error-in-community"].candidates(pos, labels).tolist() == [0, 3, 5]
    assert RULES["rebuild"].candidates(pos, None).tolist() == pos.tolist()  # needs no communities
    assert RULES["norm-in-community"].candidates(pos, np.arange(5)) is None  # every channel alone


def test_rules_declare_what_they_read():
    assert RULES["rebuild"].needs_calibration and not RULES["rebuild"].in_community
    assert RULES["rebuild-in-community"].needs_calibration and RULES["rebuild-in-community"].in_community
    assert not RULES["error-in-community"].needs_calibration and RULES["error-in-community"].loss == "error"
    assert RULES["reconstruction"].gram and RULES["reconstruction"].loss is None


def test_register_refuses_a_taken_or_empty_name():
    class Twice(Rule):
        name = "rebuild"

    with pytest.raises(ValueError, match="already registered"):
        register(Twice())
    with pytest.raises(ValueError, match="needs a name"):
        register(Rule())


def test_largest_community_ties_go_to_the_lowest_label():
    assert largest_community(np.array([1, 0, 1, 0, 2])).tolist() == [1, 3]  # label 0, not 1


