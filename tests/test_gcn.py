"""SPTCH's graph convolutions (Eqs. 3-5) against hand-computed cases and plain loops."""
from __future__ import annotations

import math

import pytest
import torch

from avsearch.ops.gcn import GCN, MultiModalGCN, multimodal_graph, normalised_graph


def test_normalised_graph_by_hand():
    s = torch.tensor([[1.0, 0.5], [0.5, -1.0]])
    # degrees |1| + |0.5| = 1.5 both; entries / 1.5
    torch.testing.assert_close(normalised_graph(s), s / 1.5)
    s = torch.tensor([[1.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    d = [2.0, 4.0, 0.0]
    expect = [[s[i, j].item() / math.sqrt(d[i] * d[j]) if d[i] and d[j] else 0.0
               for j in range(3)] for i in range(3)]
    torch.testing.assert_close(normalised_graph(s), torch.tensor(expect))


def test_multimodal_graph_is_eq_5():
    s = torch.tensor([[1.0, 0.2], [0.2, 1.0]])
    torch.testing.assert_close(multimodal_graph(s), torch.tensor(
        [[1.0, 0.2, 1.0, 0.0], [0.2, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.2], [0.0, 1.0, 0.2, 1.0]]))


def _loop_gcn(h, s, weights):
    """Eq. 3 by loops: A = D^-1/2 S D^-1/2, then h <- relu(A h W) (no relu after the last)."""
    n = len(s)
    deg = [sum(abs(v) for v in row) for row in s]
    a = [[s[i][j] / math.sqrt(deg[i] * deg[j]) for j in range(n)] for i in range(n)]
    for k, w in enumerate(weights):          # w: (out, in) as nn.Linear stores it
        hw = [[sum(h[i][c] * w[o][c] for c in range(len(h[i]))) for o in range(len(w))]
              for i in range(n)]
        h = [[sum(a[i][j] * hw[j][o] for j in range(n)) for o in range(len(w))] for i in range(n)]
        if k < len(weights) - 1:
            h = [[max(v, 0.0) for v in row] for row in h]
    return h


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_gcn_is_eq_3(depth):
    torch.manual_seed(0)
    net = GCN(3, depth).double()
    h = torch.randn(4, 3, dtype=torch.float64)
    s = torch.tanh(torch.randn(4, 4, dtype=torch.float64))
    s = (s + s.T) / 2
    weights = [layer.weight.tolist() for layer in net.layers]
    torch.testing.assert_close(net(h, s), torch.tensor(_loop_gcn(h.tolist(), s.tolist(), weights),
                                                       dtype=torch.float64))
    assert torch.equal(GCN(3, 0)(h, s), h)


def test_multimodal_gcn_mixes_an_item_s_two_modalities():
    torch.manual_seed(1)
    net = MultiModalGCN(2, 1).double()
    v, t = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    s = torch.eye(3, dtype=torch.float64)          # no item is like another
    out_v, out_t = net(v, t, s)
    w = net.gcn.layers[0].weight
    # S^c = [[I, I], [I, I]]: degree 2, so each video row becomes (v_i + t_i) W^T / 2
    torch.testing.assert_close(out_v, (v + t) @ w.T / 2)
    torch.testing.assert_close(out_t, (v + t) @ w.T / 2)
