"""InfoNCE (AV-NAS Eq. 36) against a per-anchor loop written from the equation, and every
registered objective through avsearch.testing's conformance suite."""
from __future__ import annotations

import math

import numpy as np
import torch

from avsearch.objectives import InfoNCE, info_nce, list_objectives
from avsearch.testing import ObjectiveTests
from avsearch.testing.helpers import DATA_IMG, DATA_V


def test_info_nce_matches_the_equation():
    torch.manual_seed(0)
    a, p, n = torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 4, 8)
    tau = 0.1
    expected = 0.0
    for i in range(5):
        cos = lambda u, v: float(u @ v / (u.norm() * v.norm()))  # noqa: E731
        pos = math.exp(cos(a[i], p[i]) / tau)
        neg = sum(math.exp(cos(a[i], n[i, j]) / tau) for j in range(4))
        expected += -math.log(pos / (pos + neg))
    assert abs(info_nce(a, p, n, tau).item() - expected / 5) < 1e-5


def test_info_nce_prefers_close_positives():
    a = torch.tensor([[1.0, 0.0]])
    good = info_nce(a, torch.tensor([[1.0, 0.1]]), torch.tensor([[[-1.0, 0.0]] * 4]))
    bad = info_nce(a, torch.tensor([[-1.0, 0.1]]), torch.tensor([[[1.0, 0.0]] * 4]))
    assert good < 0.01 < bad


def test_loss_encodes_each_video_once_and_gathers_by_role():
    seen = []

    def encode(index):
        seen.append(index.copy())
        return torch.tensor(np.eye(10)[index], dtype=torch.float32)

    batch = np.array([[0, 1, 2, 3, 4, 5], [1, 0, 2, 3, 4, 5]])
    loss = InfoNCE().loss(encode, batch)
    assert len(seen) == 1 and seen[0].tolist() == [0, 1, 2, 3, 4, 5]
    # one-hot codes: cos(a,p) = cos(a,n) = 0 for every pair, so the loss is log(1 + 4)
    assert abs(loss.item() - math.log(5)) < 1e-6


# ---------------------------------------------------------------- the conformance suite, per objective
VHMT_SMALL = {"d": 8, "d_dec": 8, "bits": 8, "heads": 2, "d_state": 4}


class TestSupCon(ObjectiveTests):
    objective_name = "supcon"


class TestInfoNCE(ObjectiveTests):
    objective_name = "infonce"


class TestVHMT(ObjectiveTests):
    objective_name = "vhmt"
    space_name, space_options, data_name = "vhmt", VHMT_SMALL, DATA_V


class TestAutoSSVH(ObjectiveTests):
    objective_name = "autossvh"
    space_name, space_options, data_name = "vhmt", VHMT_SMALL, DATA_V


class TestLAGNH(ObjectiveTests):
    """Images with auxiliary semantics (tags), through the lagnh space."""
    objective_name = "lagnh"
    space_name, space_options, data_name = "lagnh", {"d": 8, "bits": 8, "hiddens": "4,8"}, DATA_IMG


class TestSPTCH(ObjectiveTests):
    """Videos and captions (avclips), through the sptch space."""
    objective_name = "sptch"
    space_name, data_name = "sptch", "avclips"
    space_options = {"d": 8, "bits": 8, "heads": 2, "d_state": 4, "depths": "1,2",
                     "gcn_depths": "1"}


def test_every_registered_objective_runs_the_conformance_suite():
    checked = {cls.objective_name for cls in ObjectiveTests.__subclasses__()
               if cls.__module__ == __name__}
    assert checked == set(list_objectives())
