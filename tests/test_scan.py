"""Tests of the selective scan op: values and every gradient against the sequential reference,
a hand-computed case, the custom-op contract (opcheck, export round-trip with a dynamic batch).
"""
from __future__ import annotations

import math

import pytest
import torch

import avsearch  # noqa: F401  (registers avsearch::selective_scan)
from avsearch.ops import _scan_cpu
from avsearch.ops.scan import _torch_bwd, selective_scan, selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(b, d, L, N, *, D=True, z=True, bias=True, dtype=torch.float64, seed=0,
                requires_grad=True):
    """Random inputs in a realistic range: Δ around softplus scale, A negative (stable)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    x = {
        "u": r(b, d, L),
        "delta": 0.5 * r(b, d, L).abs() + 0.05,
        "A": -torch.exp(0.5 * r(d, N)),
        "B": r(b, N, L),
        "C": r(b, N, L),
        "D": r(d) if D else None,
        "z": r(b, d, L) if z else None,
        "delta_bias": 0.1 * r(d) if bias else None,
    }
    if requires_grad:
        for v in x.values():
            if v is not None:
                v.requires_grad_()
    return x


def args_of(x):
    return [x[k] for k in NAMES]


def grads(fn, x, softplus, gout):
    out = fn(*args_of(x), delta_softplus=softplus)
    present = [k for k in NAMES if x[k] is not None]
    gs = torch.autograd.grad(out, [x[k] for k in present], gout)
    return out, dict(zip(present, gs))


# (b, d, L, N, D, z, bias, softplus)
CASES = [
    (2, 3, 5, 4, True, True, True, True),
    (1, 7, 1, 1, True, False, False, False),      # batch 1, L 1, N 1
    (3, 13, 9, 16, False, True, False, True),
    (4, 5, 17, 3, True, False, True, False),
    (1, 1, 6, 2, False, False, False, False),     # bare scan
    (5, 11, 25, 16, True, True, True, True),      # the search's L and N
]


def case_id(c):
    return "b{}d{}L{}N{}-D{:d}z{:d}bias{:d}sp{:d}".format(*c)


def randn(*shape, dtype=torch.float64, seed=1):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_all_grads_match_reference(case):
    b, d, L, N, hasD, hasz, hasbias, sp = case
    x = make_inputs(b, d, L, N, D=hasD, z=hasz, bias=hasbias, seed=hash(case) % 1000)
    gout = randn(b, d, L)
    out, g = grads(selective_scan, x, sp, gout)
    ref, gref = grads(selective_scan_ref, x, sp, gout)
    assert out.dtype == torch.float64 and out.shape == (b, d, L)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert g.keys() == gref.keys()
    for k in g:
        torch.testing.assert_close(g[k], gref[k], rtol=1e-9, atol=1e-9, msg=f"grad of {k}")


@pytest.mark.parametrize("case", CASES[:4], ids=case_id)
def test_torch_fallback_backward_matches_reference(case):
    """The device-generic backward (used where neither numba nor mamba-ssm applies)."""
    b, d, L, N, hasD, hasz, hasbias, sp = case
    x = make_inputs(b, d, L, N, D=hasD, z=hasz, bias=hasbias, seed=7)
    gout = randn(b, d, L)
    _, gref = grads(selective_scan_ref, x, sp, gout)
    det = [v.detach() if v is not None else None for v in args_of(x)]
    got = _torch_bwd(gout, *det, sp, torch.float64)
    for k, gk in zip(NAMES, got):
        assert (gk is None) == (k not in gref)
        if gk is not None:
            torch.testing.assert_close(gk, gref[k], rtol=1e-9, atol=1e-9, msg=f"grad of {k}")


def test_float32_kernel_close_to_float64_reference():
    """The float32 path uses a polynomial exp; it must stay at float32 accuracy."""
    x64 = make_inputs(4, 24, 25, 16, seed=3)
    x32 = {k: (v.detach().float().requires_grad_() if v is not None else None)
           for k, v in x64.items()}
    gout = randn(4, 24, 25)
    out, g = grads(selective_scan, x32, True, gout.float())
    ref, gref = grads(selective_scan_ref, x64, True, gout)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    for k in g:
        assert g[k].dtype == torch.float32
        scale = gref[k].abs().max().item() + 1e-12
        err = (g[k].double() - gref[k]).abs().max().item()
        assert err <= 1e-4 * scale, f"grad of {k}: {err} vs scale {scale}"


def test_exp32_accuracy_and_edges():
    """The float32 kernel's exp: ~3 ulp in range; documented clamping outside it."""
    import numpy as np

    xs = np.linspace(-87.3, 88.3, 4001, dtype=np.float32)
    got = np.array([_scan_cpu._exp32(v) for v in xs], dtype=np.float64)
    want = np.exp(xs.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 4e-7
    assert _scan_cpu._exp32(np.float32(0.0)) == 1.0
    assert 0.0 < _scan_cpu._exp32(np.float32(-200.0)) <= 1.2e-38  # floor of the clamp
    assert math.isinf(_scan_cpu._exp32(np.float32(200.0)))
    assert math.isnan(_scan_cpu._exp32(np.float32("nan")))


def test_log1p01_32_accuracy():
    """The float32 softplus uses a series log1p on [0, 1]."""
    import numpy as np

    xs = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    got = np.array([_scan_cpu._log1p01_32(v) for v in xs], dtype=np.float64)
    want = np.log1p(xs.astype(np.float64))
    assert got[0] == 0.0
    assert np.max(np.abs(got[1:] - want[1:]) / want[1:]) < 3e-7


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_softplus_extremes_match_reference(dtype):
    """Δ far below zero, around torch's softplus threshold (20) and above it."""
    x64 = make_inputs(2, 4, 8, 3, seed=21)
    vals = torch.tensor([-30.0, -8.0, -1e-3, 0.0, 19.99, 20.0, 20.01, 35.0], dtype=torch.float64)
    with torch.no_grad():
        x64["delta"].copy_(vals.expand(2, 4, 8))
        x64["delta_bias"].zero_()
        x64["A"].mul_(0.05)  # keep exp(Δ A) away from 0 so every gradient path is exercised
    xd = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None)
          for k, v in x64.items()}
    gout = randn(2, 4, 8)
    out, g = grads(selective_scan, xd, True, gout.to(dtype))
    ref, gref = grads(selective_scan_ref, x64, True, gout)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    for k in g:
        scale = gref[k].abs().max().item() + 1e-12
        err = (g[k].double() - gref[k]).abs().max().item()
        assert err <= tol * scale, f"grad of {k}: {err} vs scale {scale}"


def test_hand_computed_case():
    """dim 1, N 1, L 3 with exp(Δ A) = 1/2, Δ = B = 1, D = 1/2; loss = sum(out).

    h = [1, 0.5*1 + 2, 0.5*2.5 + 3] = [1, 2.5, 4.25]; y = C*h + D*u = [1.5, 6, 5.75].
    Reverse: g3 = C3 = 1, g2 = C2 + g3/2 = 2.5, g1 = C1 + g2/2 = 2.25;
    du = D + g*B*Δ = [2.75, 3, 1.5]; dB = g*Δ*u = [2.25, 5, 3]; dC = h; dD = sum(u) = 6;
    dA = sum_t g_t h_{t-1} e Δ = (2.5*1 + 1*2.5)/2 = 2.5.
    """
    t = lambda v: torch.tensor(v, dtype=torch.float64).requires_grad_()  # noqa: E731
    u, delta = t([[[1.0, 2.0, 3.0]]]), t([[[1.0, 1.0, 1.0]]])
    A, B, C, D = t([[-math.log(2.0)]]), t([[[1.0, 1.0, 1.0]]]), t([[[1.0, 2.0, 1.0]]]), t([0.5])
    out = selective_scan(u, delta, A, B, C, D)
    torch.testing.assert_close(out, torch.tensor([[[1.5, 6.0, 5.75]]], dtype=torch.float64))
    out.sum().backward()
    exp = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(u.grad, exp([[[2.75, 3.0, 1.5]]]))
    torch.testing.assert_close(B.grad, exp([[[2.25, 5.0, 3.0]]]))
    torch.testing.assert_close(C.grad, exp([[[1.0, 2.5, 4.25]]]))
    torch.testing.assert_close(D.grad, exp([6.0]))
    torch.testing.assert_close(A.grad, exp([[2.5]]))


@pytest.mark.parametrize("split", [(1, 1), (1, 4), (2, 2), (2, 7), (3, 5), (2, 15)], ids=str)
def test_work_split_any_block_count(monkeypatch, split):
    """(workers, blocks): blocks that cut a batch element's dims (boundary slots) and workers
    that run several blocks must reduce to the same gradients."""
    monkeypatch.setattr(_scan_cpu, "_split", lambda nchains: split)
    x = make_inputs(3, 5, 4, 3, seed=11)  # 15 chains
    gout = randn(3, 5, 4)
    _, g = grads(selective_scan, x, True, gout)
    _, gref = grads(selective_scan_ref, x, True, gout)
    for k in g:
        torch.testing.assert_close(g[k], gref[k], rtol=1e-9, atol=1e-9, msg=f"grad of {k}")


def test_noncontiguous_inputs_and_partial_requires_grad():
    x = make_inputs(3, 6, 8, 4, requires_grad=False, seed=5)
    # same values through strided views
    u_nc = x["u"].transpose(1, 2).contiguous().transpose(1, 2)
    B_nc = x["B"].transpose(1, 2).contiguous().transpose(1, 2)
    C_big = randn(3, 4, 16)
    C_big[:, :, ::2] = x["C"]
    C_nc = C_big[:, :, ::2]
    assert not (u_nc.is_contiguous() or B_nc.is_contiguous() or C_nc.is_contiguous())
    u_nc.requires_grad_()
    out = selective_scan(u_nc, x["delta"], x["A"], B_nc, C_nc, x["D"], x["z"], x["delta_bias"])
    ref = selective_scan_ref(*args_of(x))
    torch.testing.assert_close(out, ref)
    (gu,) = torch.autograd.grad(out.sum(), u_nc)
    xr = dict(x, u=x["u"].clone().requires_grad_())
    (gu_ref,) = torch.autograd.grad(selective_scan_ref(*args_of(xr)).sum(), xr["u"])
    torch.testing.assert_close(gu, gu_ref)


def test_thread_setting_does_not_change_results():
    x = make_inputs(4, 9, 7, 5, seed=2, requires_grad=False)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = selective_scan(*args_of(x), delta_softplus=True)
        torch.set_num_threads(2)
        b = selective_scan(*args_of(x), delta_softplus=True)
    finally:
        torch.set_num_threads(prev)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_backward_bit_reproducible_with_threads():
    """Workers take blocks in any order; the gradients must not depend on it."""
    x = make_inputs(4, 37, 9, 5, seed=8)
    gout = randn(4, 37, 9)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runs = [grads(selective_scan, x, True, gout)[1] for _ in range(3)]
    finally:
        torch.set_num_threads(prev)
    for k in runs[0]:
        for other in runs[1:]:
            assert torch.equal(runs[0][k], other[k]), k


def test_gradcheck_tiny():
    x = make_inputs(2, 3, 4, 2, seed=9)
    fn = lambda *a: selective_scan(*a, delta_softplus=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(args_of(x)), eps=1e-6, atol=1e-7)


def test_shape_errors():
    x = make_inputs(2, 3, 4, 2, requires_grad=False)
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"][:, :, :3], x["C"])
    with pytest.raises(ValueError, match="A must be real"):
        selective_scan(x["u"], x["delta"], x["A"][:2], x["B"], x["C"])


@pytest.mark.parametrize("opt", [True, False], ids=["all-args", "no-optionals"])
def test_opcheck(opt):
    x = make_inputs(2, 3, 5, 4, D=opt, z=opt, bias=opt, dtype=torch.float32, seed=4)
    torch.library.opcheck(torch.ops.avsearch.selective_scan.default,
                          (*args_of(x), opt), atol=1e-4, rtol=1e-4)
    nograd = [v.detach() if v is not None else None for v in args_of(x)]
    torch.library.opcheck(torch.ops.avsearch.selective_scan.default, (*nograd, opt))
    gout = randn(2, 3, 5, dtype=torch.float32)
    torch.library.opcheck(torch.ops.avsearch.selective_scan_backward.default,
                          (gout, *nograd, opt))


class _SSM(torch.nn.Module):
    def __init__(self, d, N):
        super().__init__()
        self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, N + 1.0)).repeat(d, 1))
        self.D = torch.nn.Parameter(torch.ones(d))
        self.dt_bias = torch.nn.Parameter(torch.zeros(d))

    def forward(self, u, delta, B, C):
        return selective_scan(u, delta, -torch.exp(self.A_log), B, C, self.D,
                              delta_bias=self.dt_bias, delta_softplus=True)


def test_export_roundtrip_one_node_dynamic_batch(tmp_path):
    d, L, N = 6, 5, 4
    m = _SSM(d, N)

    def inputs(b):
        x = make_inputs(b, d, L, N, dtype=torch.float32, requires_grad=False, seed=b)
        return (x["u"], x["delta"], x["B"], x["C"])

    batch = torch.export.Dim("batch", min=1)
    dyn = {"u": {0: batch}, "delta": {0: batch}, "B": {0: batch}, "C": {0: batch}}
    ep = torch.export.export(m, inputs(3), dynamic_shapes=dyn)
    target = torch.ops.avsearch.selective_scan.default
    assert sum(n.target is target for n in ep.graph.nodes) == 1
    path = tmp_path / "ssm.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    assert sum(n.target is target for n in loaded.graph.nodes) == 1
    for b in (1, 7):
        with torch.no_grad():
            torch.testing.assert_close(loaded.module()(*inputs(b)), m(*inputs(b)))
