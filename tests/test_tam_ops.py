"""Building blocks of the VHMT and AutoSSVH spaces: KAN, TAM/TRE, temporal DWT, frame sampler.

References are independent of the code under test: SciPy's B-splines and the closed-form
cubic B-spline for the KAN bases, PyWavelets' ``dwt`` for the wavelet low band, PyTorch's
``nn.MultiheadAttention`` for Eq. 11, hand-computed values elsewhere.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from scipy.interpolate import BSpline
from torch import nn
from torch.func import functional_call

from avsearch.ops.downsample import DOWNSAMPLE_MODES, TemporalDownsample, downsampled_length
from avsearch.ops.frame_sampler import (
    FrameSampler, GradeNet, GradientReversal, grad_reverse, gumbel_noise, gumbel_topk)
from avsearch.ops.kan import KANLinear, TemporalKAN, bspline_bases, uniform_knots
from avsearch.ops.registry import OpConfig
from avsearch.ops.ssm import MambaBlock
from avsearch.ops.tam import (
    TAM_VARIANTS, TRE, FrameHashLayer, TAMBlock, TAMDecoder, TREMLP, tam_block)

W = 16
CFG = OpConfig(heads=2, d_state=4, dropout=0.0, max_len=32)


def randn(*shape, dtype=torch.float32, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ===================================================================================== KAN

def test_knots_are_uniform_and_extended_by_the_degree():
    # 5 coefficients, degree 3 -> 2 intervals on [-1, 1] (h = 1), 3 extra knots each side
    torch.testing.assert_close(uniform_knots(5, 3, (-1, 1)),
                               torch.arange(-4, 5, dtype=torch.float64))
    t = uniform_knots(8, 2, (0.0, 3.0))          # 6 intervals of 0.5
    assert t.numel() == 8 + 2 + 1 and t[2] == 0.0 and t[8] == 3.0
    torch.testing.assert_close(t.diff(), torch.full((10,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="must exceed"):
        uniform_knots(3, 3)


@pytest.mark.parametrize("grid_size,order", [(5, 3), (8, 3), (4, 1), (6, 2), (3, 0)])
def test_bases_match_scipy_bsplines(grid_size, order):
    t = uniform_knots(grid_size, order, (-1.0, 2.0))
    rng = np.random.default_rng(grid_size * 10 + order)
    x = rng.uniform(t[0].item() - 0.5, t[-1].item() + 0.5, size=400)
    ours = bspline_bases(torch.from_numpy(x), t, order).numpy()
    assert ours.shape == (400, grid_size)
    knots = t.numpy()
    for j in range(grid_size):
        ref = BSpline.basis_element(knots[j:j + order + 2], extrapolate=False)(x)
        np.testing.assert_allclose(ours[:, j], np.nan_to_num(ref, nan=0.0), atol=1e-12)


def test_cubic_bases_match_the_closed_form():
    def cubic(u):  # the uniform cubic B-spline on [0, 4), in units of the knot spacing
        return np.select([(u >= 0) & (u < 1), (u >= 1) & (u < 2), (u >= 2) & (u < 3),
                          (u >= 3) & (u < 4)],
                         [u ** 3 / 6, (-3 * u ** 3 + 12 * u ** 2 - 12 * u + 4) / 6,
                          (3 * u ** 3 - 24 * u ** 2 + 60 * u - 44) / 6, (4 - u) ** 3 / 6], 0.0)
    t = uniform_knots(5, 3, (-1.0, 1.0)).numpy()     # spacing 1
    x = np.linspace(-4.5, 4.5, 301)
    ours = bspline_bases(torch.from_numpy(x), torch.from_numpy(t), 3).numpy()
    for j in range(5):
        np.testing.assert_allclose(ours[:, j], cubic(x - t[j]), atol=1e-12)
    # a hand value: at x = 0 (the grid centre) the bases are 0, 1/6, 2/3, 1/6, 0
    at0 = bspline_bases(torch.zeros(1, dtype=torch.float64), torch.from_numpy(t), 3)[0]
    torch.testing.assert_close(at0, torch.tensor([0, 1 / 6, 2 / 3, 1 / 6, 0], dtype=torch.float64))


@pytest.mark.parametrize("grid_size,order", [(5, 3), (9, 3), (5, 2)])
def test_bases_are_a_partition_of_unity_inside_the_grid(grid_size, order):
    t = uniform_knots(grid_size, order, (-1.0, 1.0))
    inside = torch.cat([torch.linspace(-1, 1, 257, dtype=torch.float64),
                        torch.rand(500, dtype=torch.float64) * 2 - 1])
    b = bspline_bases(inside, t, order)
    torch.testing.assert_close(b.sum(-1), torch.ones_like(inside))
    assert (b >= 0).all()
    # between the grid and the last knot the sum falls below one; beyond the knots it is 0
    h = (t[1] - t[0]).item()
    edge = torch.tensor([1 + 0.5 * h, -1 - 0.5 * h], dtype=torch.float64)
    assert (bspline_bases(edge, t, order).sum(-1) < 1 - 1e-6).all()
    outside = torch.tensor([t[0].item() - 0.1, t[-1].item(), t[-1].item() + 3.0],
                           dtype=torch.float64)
    assert bspline_bases(outside, t, order).abs().max() == 0


def test_kan_linear_has_the_papers_five_coefficients_per_edge():
    layer = KANLinear(3, 4)                    # defaults: VHMT §4.3
    assert layer.spline_weight.shape == (4, 3, 5)
    assert layer.base_weight.shape == layer.spline_scaler.shape == (4, 3)
    assert layer.bases(torch.zeros(2, 3)).shape == (2, 3, 5)
    assert layer.knots.numel() == 5 + 3 + 1
    assert "knots" not in layer.state_dict()   # a constant, not a weight


def test_kan_linear_matches_equation_17_evaluated_independently():
    torch.manual_seed(0)
    layer = KANLinear(3, 2, grid_size=6, spline_order=3, grid_range=(-2.0, 1.0)).double()
    with torch.no_grad():
        layer.spline_weight.normal_()          # make the spline branch matter
    x = randn(7, 3, dtype=torch.float64) * 2
    knots = layer.knots.numpy()
    om, om2 = layer.base_weight.detach().numpy(), layer.spline_scaler.detach().numpy()
    c = layer.spline_weight.detach().numpy()
    xn = x.numpy()
    ref = np.zeros((7, 2))
    for n in range(7):
        for j in range(2):
            for i in range(3):
                xi = xn[n, i]
                spline = sum(c[j, i, p] * np.nan_to_num(
                    BSpline.basis_element(knots[p:p + 5], extrapolate=False)(xi), nan=0.0)
                    for p in range(6))
                ref[n, j] += om[j, i] * xi / (1 + np.exp(-xi)) + om2[j, i] * spline
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    # leading dimensions are kept: (B, T, d) works like (B·T, d)
    x3 = randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x3), layer(x3.reshape(10, 3)).reshape(2, 5, 2))


def test_kan_linear_gradcheck_float64():
    torch.manual_seed(0)
    layer = KANLinear(3, 2, grid_size=5, spline_order=3).double()
    x = (randn(4, 3, dtype=torch.float64) * 1.5).requires_grad_()
    names = ["base_weight", "spline_scaler", "spline_weight"]
    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]

    def f(x, *ps):
        return functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


def test_temporal_kan_is_two_kan_layers_per_time_step():
    torch.manual_seed(0)
    tkan = TemporalKAN(W, hidden=8)
    assert [type(m) for m in tkan.layers] == [KANLinear, KANLinear]
    assert (tkan.layers[0].in_features, tkan.layers[0].out_features) == (W, 8)
    assert (tkan.layers[1].in_features, tkan.layers[1].out_features) == (8, W)
    x = randn(2, 6, W)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(tkan(x[:, perm]), tkan(x)[:, perm])    # no mixing over time
    # the other reading of "Reshape": the KAN acts along time, per channel
    ttime = TemporalKAN(W, axis="time", length=6)
    out = ttime(x)
    assert out.shape == x.shape
    assert not torch.allclose(ttime(x[:, perm]), out[:, perm])
    with pytest.raises(ValueError, match="length"):
        TemporalKAN(W, axis="time")


# ============================================================================= TAM / TRE

@pytest.mark.parametrize("variant", TAM_VARIANTS)
def test_tam_variants_shapes_and_every_parameter_learns(variant):
    torch.manual_seed(0)
    block = tam_block(variant, W, config=CFG)
    x = randn(3, 7, W).requires_grad_()
    out = block(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tam_variant_modules():
    def kinds(v):
        b = tam_block(v, W, config=CFG)
        return type(b.mixer).__name__, type(b.ffn).__name__
    assert kinds("MHA") == ("MultiHeadAttention", "NoneType")
    assert kinds("MHA+MLP") == ("MultiHeadAttention", "TREMLP")
    assert kinds("MHA+KAN") == ("MultiHeadAttention", "TemporalKAN")
    assert kinds("Mamba+TRE") == ("MambaMixer", "TRE")
    assert kinds("MHA+TRE") == ("MultiHeadAttention", "TRE")
    with pytest.raises(ValueError, match="MHA\\+TRE"):
        tam_block("MLP+MHA", W)
    assert tam_block("MHA", W, heads=4).mixer.core.heads == 4
    assert tam_block("MHA", W, config=CFG).mixer.core.heads == 2


def _torch_mha(block: TAMBlock) -> nn.MultiheadAttention:
    core = block.mixer.core
    ref = nn.MultiheadAttention(W, core.heads, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([core.q_proj.weight, core.k_proj.weight,
                                            core.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([core.q_proj.bias, core.k_proj.bias, core.v_proj.bias]))
        ref.out_proj.load_state_dict(block.mixer.out_proj.state_dict())
    return ref


def _ln(x, norm):
    return F.layer_norm(x, (W,), norm.weight, norm.bias, norm.eps)


@pytest.mark.parametrize("residual", ["normed", "input"])
def test_mha_tam_is_equation_11_left_half(residual):
    torch.manual_seed(0)
    block = tam_block("MHA", W, config=CFG, residual=residual).eval()
    with torch.no_grad():
        block.norm1.weight.uniform_(0.5, 1.5)
        block.norm1.bias.normal_()
    mha = _torch_mha(block)
    x = randn(2, 9, W)
    nx = _ln(x, block.norm1)
    ref = mha(nx, nx, nx, need_weights=False)[0] + (nx if residual == "normed" else x)
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual", ["normed", "input"])
def test_mha_mlp_tam_is_equation_11_with_equation_13(residual):
    torch.manual_seed(0)
    block = tam_block("MHA+MLP", W, config=CFG, residual=residual).eval()
    for norm in (block.norm1, block.norm2, block.ffn.norm):
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
    mha = _torch_mha(block)
    mlp = nn.Sequential(nn.LayerNorm(W), nn.Linear(W, 4 * W), nn.GELU(), nn.Linear(4 * W, W))
    mlp[0].load_state_dict(block.ffn.norm.state_dict())
    mlp[1].load_state_dict(block.ffn.fc1.state_dict())
    mlp[3].load_state_dict(block.ffn.fc2.state_dict())
    x = randn(2, 9, W)
    nx = _ln(x, block.norm1)
    y = mha(nx, nx, nx, need_weights=False)[0] + (nx if residual == "normed" else x)
    ny = _ln(y, block.norm2)
    ref = mlp(ny) + (ny if residual == "normed" else y)
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_tre_is_the_hadamard_product_of_tkan_and_the_mlp():
    """Eq. 16: with TKAN made constant (c_j per channel), TRE(x) = c ⊙ MLP(x) (Eq. 13)."""
    torch.manual_seed(0)
    tre = TRE(W, mlp_ratio=2, dropout=0.0).eval()
    first, second = tre.tkan.layers
    c = randn(W, seed=3)
    with torch.no_grad():
        first.base_weight.zero_()
        first.spline_weight.zero_()          # layer 1 ≡ 0, inside the grid
        second.base_weight.normal_()         # SiLU(0) = 0: no effect
        second.spline_scaler.fill_(1.0)
        # Σ_p B_p(0) = 1, so layer 2 ≡ Σ_i c_j / in = c_j
        second.spline_weight.copy_((c / W)[:, None, None].expand(W, W, 5))
    mlp = nn.Sequential(nn.LayerNorm(W), nn.Linear(W, 2 * W), nn.GELU(), nn.Linear(2 * W, W))
    mlp[0].load_state_dict(tre.mlp.norm.state_dict())
    mlp[1].load_state_dict(tre.mlp.fc1.state_dict())
    mlp[3].load_state_dict(tre.mlp.fc2.state_dict())
    x = randn(2, 5, W)
    torch.testing.assert_close(tre(x), c * mlp(x), rtol=1e-5, atol=1e-6)
    # and in general TKAN reads the *normalised* MLP output (Eq. 14)
    tre2 = TRE(W, dropout=0.0).eval()
    x_mlp = tre2.mlp(x)
    ref = tre2.tkan(F.layer_norm(x_mlp, (W,), tre2.norm.weight, tre2.norm.bias)) * x_mlp
    torch.testing.assert_close(tre2(x), ref)
    assert tre2.tkan.layers[0].grid_size == 5 and tre2.tkan.layers[0].spline_order == 3


def test_tre_mlp_applies_dropout_twice_in_training():
    mlp = TREMLP(W, dropout=0.5).train()
    x = randn(4, 8, W)
    torch.manual_seed(1)
    a = mlp(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, mlp(x))
    mlp.eval()
    torch.testing.assert_close(mlp(x), mlp(x))


def test_mamba_tam_mixer_is_the_mamba_block_body():
    torch.manual_seed(0)
    block = tam_block("Mamba+TRE", W, config=CFG).eval()
    ref = MambaBlock(W, CFG).eval()
    state = {k: v for k, v in block.mixer.block.state_dict().items()}
    ref.load_state_dict({**ref.state_dict(), **state})   # ref keeps its own (unit) LayerNorm
    u = F.layer_norm(randn(2, 8, W), (W,))                # LN(u) = u up to eps
    torch.testing.assert_close(block.mixer(u), ref(u) - u, rtol=1e-4, atol=1e-4)


def test_mamba_tam_is_causal_and_mha_tam_is_not():
    torch.manual_seed(0)
    x = randn(2, 10, W)
    x2 = x.clone()
    x2[:, 6:] += randn(2, 4, W, seed=5)
    mamba = tam_block("Mamba+TRE", W, config=CFG).eval()
    torch.testing.assert_close(mamba(x2)[:, :6], mamba(x)[:, :6])
    assert not torch.allclose(mamba(x2)[:, 6:], mamba(x)[:, 6:])
    mha = tam_block("MHA+TRE", W, config=CFG).eval()
    assert not torch.allclose(mha(x2)[:, :6], mha(x)[:, :6])


@pytest.mark.parametrize("variant", ["MHA", "MHA+MLP", "MHA+KAN", "MHA+TRE"])
def test_attention_tam_is_permutation_equivariant_over_time(variant):
    torch.manual_seed(0)
    block = tam_block(variant, W, config=CFG).eval()
    x = randn(2, 7, W)
    perm = torch.tensor([6, 2, 0, 4, 1, 5, 3])
    torch.testing.assert_close(block(x[:, perm]), block(x)[:, perm], rtol=1e-5, atol=1e-5)


def test_tam_decoder_reconstructs_the_full_length():
    torch.manual_seed(0)
    dec = TAMDecoder(8, W, 12, depth=2, config=CFG)
    assert len(dec.blocks) == 2 and all(isinstance(b, TAMBlock) for b in dec.blocks)
    h = randn(3, 7, 8).requires_grad_()
    out = dec(h, length=25)
    assert out.shape == (3, 25, 12)
    out.sum().backward()
    assert h.grad.abs().sum() > 0
    assert dec(h).shape == (3, 7, 12)
    # linear interpolation of a constant sequence stays constant: the upsampling adds nothing
    dec0 = TAMDecoder(W, W, W, depth=0, config=CFG, positional=False)
    assert isinstance(dec0.in_proj, nn.Identity)
    const = torch.ones(1, 4, W)
    torch.testing.assert_close(dec0(const, length=11), dec0.out_proj(torch.ones(1, 11, W)))


def test_tam_exports_with_dynamic_batch_and_length():
    torch.manual_seed(0)
    block = tam_block("MHA+TRE", W, config=CFG).eval()
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("length", max=64)},)
    ep = torch.export.export(block, (randn(2, 9, W),), dynamic_shapes=dims)
    x = randn(3, 13, W, seed=4)
    torch.testing.assert_close(ep.module()(x), block(x))


def test_frame_hash_layer_is_equations_9_and_10():
    torch.manual_seed(0)
    layer = FrameHashLayer(W, 8)
    e = randn(2, 5, W)
    ref = torch.tanh(F.layer_norm(layer.fc(e), (8,), layer.norm.weight, layer.norm.bias))
    torch.testing.assert_close(layer(e), ref)
    assert (layer(e).abs() < 1).all()
    # Eq. 10 is a per-bit majority vote of the frames' signs, sign(0) = +1 on ties
    h = torch.tensor([[[0.9, -0.1, 0.2, 0.0],
                       [-0.2, -0.3, 0.1, -0.5],
                       [-0.1, 0.8, -0.6, -0.4]]])
    # signs: (+,-,+,+), (-,-,+,-), (-,+,-,-) -> sums -1, -1, +1, -1
    torch.testing.assert_close(FrameHashLayer.codes(h), torch.tensor([[-1.0, -1.0, 1.0, -1.0]]))
    tie = torch.tensor([[[0.5, -0.5], [-0.7, 0.2]]])      # two frames, opposite signs
    torch.testing.assert_close(FrameHashLayer.codes(tie), torch.tensor([[1.0, 1.0]]))


# ===================================================================== temporal downsampling

@pytest.mark.parametrize("wavelet", ["haar", "db4", "sym8"])
@pytest.mark.parametrize("boundary", ["periodization", "symmetric"])
def test_wavelet_low_band_matches_pywavelets(wavelet, boundary):
    down = TemporalDownsample(wavelet, boundary)
    rng = np.random.default_rng(0)
    for length in (1, 2, 3, 5, 7, 8, 13, 25, 30):
        x = rng.standard_normal((2, length, 3))
        ref = pywt.dwt(x, wavelet, mode=boundary, axis=1)[0]
        out = down(torch.from_numpy(x))
        assert out.shape[1] == downsampled_length(length, wavelet, boundary) == ref.shape[1]
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    # float32 too
    x32 = torch.from_numpy(rng.standard_normal((1, 25, 4)).astype(np.float32))
    np.testing.assert_allclose(down(x32).numpy(), pywt.dwt(x32.numpy(), wavelet, mode=boundary,
                                                             axis=1)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
def test_default_output_length_is_ceil_half(mode):
    down = TemporalDownsample(mode)
    for length in range(1, 20):
        assert down(torch.zeros(1, length, 2)).shape == (1, math.ceil(length / 2), 2)
    assert [downsampled_length(n, "sym8", "symmetric") for n in (1, 25)] == [8, 20]


def test_pooling_modes_by_hand_and_haar_is_scaled_average_pooling():
    x = torch.tensor([1.0, 5.0, 2.0, 4.0, 3.0]).view(1, 5, 1)
    torch.testing.assert_close(TemporalDownsample("maxpool")(x).flatten(), torch.tensor([5.0, 4.0, 3.0]))
    torch.testing.assert_close(TemporalDownsample("avgpool")(x).flatten(), torch.tensor([3.0, 3.0, 3.0]))
    # Haar periodization, odd length: the last frame is repeated -> (3 + 3)/√2
    torch.testing.assert_close(TemporalDownsample("haar")(x).flatten(),
                               torch.tensor([6.0, 6.0, 6.0]) / math.sqrt(2))
    y = randn(2, 8, 3)
    torch.testing.assert_close(TemporalDownsample("haar")(y),
                               math.sqrt(2) * TemporalDownsample("avgpool")(y))


def test_downsample_gradcheck_and_errors():
    x = randn(1, 7, 2, dtype=torch.float64).requires_grad_()
    for mode in ("db4", "sym8", "maxpool", "avgpool"):
        assert torch.autograd.gradcheck(TemporalDownsample(mode), (x,))
    assert torch.autograd.gradcheck(TemporalDownsample("db4", "symmetric"), (x,))
    with pytest.raises(ValueError, match="haar, db4, sym8"):
        TemporalDownsample("db2")
    with pytest.raises(ValueError, match="periodization"):
        TemporalDownsample("haar", "zero")


def test_pooling_modes_match_torch_ceil_mode_pooling():
    for length in range(1, 12):
        x = randn(2, length, 3, seed=length).transpose(1, 2)
        torch.testing.assert_close(TemporalDownsample("maxpool")(x.transpose(1, 2)),
                                   F.max_pool1d(x, 2, 2, ceil_mode=True).transpose(1, 2))
        torch.testing.assert_close(TemporalDownsample("avgpool")(x.transpose(1, 2)),
                                   F.avg_pool1d(x, 2, 2, ceil_mode=True).transpose(1, 2))


@pytest.mark.parametrize("mode", ["sym8", "maxpool"])
def test_downsample_exports_with_dynamic_batch_and_length(mode):
    down = TemporalDownsample(mode).eval()
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("length", min=3, max=64)},)
    ep = torch.export.export(down, (randn(2, 25, 4),), dynamic_shapes=dims)
    for length in (3, 8, 13, 30):
        x = randn(3, length, 4, seed=length)
        torch.testing.assert_close(ep.module()(x), down(x))


# ============================================================================ frame sampler

@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_gradient_reversal_layer(lam):
    x = randn(3, 4).requires_grad_()
    w = randn(3, 4, seed=2)
    y = GradientReversal(lam)(x)
    torch.testing.assert_close(y, x)
    (w * y).sum().backward()
    torch.testing.assert_close(x.grad, -lam * w)
    x2 = randn(3, 4).requires_grad_()
    (w * grad_reverse(x2, lam)).sum().backward()
    torch.testing.assert_close(x2.grad, -lam * w)
    assert list(GradientReversal().parameters()) == []


def test_grade_net_is_equation_1():
    torch.manual_seed(0)
    net = GradeNet(W, hidden=8)
    v = randn(2, 6, W)
    h = F.layer_norm(F.linear(F.gelu(net.w1(v)), net.w2.weight, net.w2.bias), (W,),
                     net.norm.weight, net.norm.bias) + v
    ref = torch.sigmoid(h @ net.w4.weight.T + net.w4.bias).squeeze(-1)
    s = net(v)
    assert s.shape == (2, 6) and ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(s, ref)
    assert net.w1.out_features == 8 and GradeNet(W).w1.out_features == W


def test_gumbel_noise_is_equation_3():
    g = torch.Generator().manual_seed(4)
    noise = gumbel_noise((1000,), eps=1e-10, dtype=torch.float64, generator=g)
    u = torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(noise, -torch.log(-torch.log(u) + 1e-10) + 1e-10)
    big = gumbel_noise((200_000,), dtype=torch.float64, generator=g)
    assert abs(big.mean().item() - 0.5772156649) < 0.01          # Euler–Mascheroni
    assert abs(big.var().item() - math.pi ** 2 / 6) < 0.03


def test_gumbel_topk_picks_k_distinct_frames_in_order():
    scores = torch.rand(64, 25, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for k in (1, 5, 12, 25):
        idx, hard, soft = gumbel_topk(scores, k, noise_scale=1.0, generator=g)
        assert idx.shape == (64, k)
        assert (idx.diff(dim=-1) > 0).all()                      # distinct, increasing
        assert (hard.sum(-1) == k).all() and set(hard.unique().tolist()) <= {0.0, 1.0}
        assert (hard.gather(1, idx) == 1).all()
        torch.testing.assert_close(soft.sum(-1), torch.ones(64))
        if k < 25:   # every selected p is at least every unselected p
            sel = soft.masked_fill(hard == 0, float("inf")).min(-1).values
            rest = soft.masked_fill(hard == 1, float("-inf")).max(-1).values
            assert (sel >= rest).all()
    # no noise: plain top-k of the scores
    idx, _, _ = gumbel_topk(scores, 4, noise=False)
    torch.testing.assert_close(idx, scores.topk(4).indices.sort().values)
    with pytest.raises(ValueError, match="k=26"):
        gumbel_topk(scores, 26)


def test_sampler_returns_selected_and_rest_frames_in_temporal_order():
    torch.manual_seed(0)
    sampler = FrameSampler(W, k=10).train()
    v = randn(8, 25, W)
    out = sampler(v, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (8, 10, W) and out.rest.shape == (8, 15, W)
    assert (out.indices.diff(dim=-1) > 0).all() and (out.rest_indices.diff(dim=-1) > 0).all()
    both = torch.cat([out.indices, out.rest_indices], -1).sort(-1).values
    torch.testing.assert_close(both, torch.arange(25).expand(8, 25))
    gather = lambda idx: v.gather(1, idx[..., None].expand(-1, -1, W))
    torch.testing.assert_close(out.frames, gather(out.indices))   # mask is 1 in value
    torch.testing.assert_close(out.rest, gather(out.rest_indices))
    torch.testing.assert_close(out.mask, out.hard)
    # training noise: another draw picks other frames; eval: deterministic top-k of scores
    other = sampler(v, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.indices, out.indices)
    sampler.eval()
    a, b = sampler(v), sampler(v)
    torch.testing.assert_close(a.indices, b.indices)
    torch.testing.assert_close(a.indices, sampler.grade(v).topk(10).indices.sort().values)
    with pytest.raises(ValueError, match="k=10 of 6"):
        sampler(v[:, :6])


def test_straight_through_gradient_is_the_soft_gradient_and_reaches_grade_net():
    torch.manual_seed(0)
    sampler = FrameSampler(W, k=4, adversarial=False).double().train()
    v = randn(3, 9, W, dtype=torch.float64)
    out = sampler(v, generator=torch.Generator().manual_seed(3))
    out.soft.retain_grad()
    wf, wr = randn(3, 4, W, dtype=torch.float64, seed=7), randn(3, 5, W, dtype=torch.float64, seed=8)
    ((wf * out.frames).sum() + (wr * out.rest).sum()).backward()
    # by hand: d/dp_t of mask_t·<w, v_t> is <w, v_t>; of (1 − mask_t)·<w', v_t> is −<w', v_t>
    expected = torch.zeros(3, 9, dtype=torch.float64)
    for b in range(3):
        for r, t in enumerate(out.indices[b]):
            expected[b, t] = (wf[b, r] * v[b, t]).sum()
        for r, t in enumerate(out.rest_indices[b]):
            expected[b, t] = -(wr[b, r] * v[b, t]).sum()
    torch.testing.assert_close(out.soft.grad, expected)
    for name, p in sampler.grade.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_sampler_gradient_is_the_reverse_of_the_hashing_networks(lam):
    """Same frames, same loss: with the GRL the gradient reaching Grade-Net is exactly −λ times
    the gradient without it, while the downstream (hashing) layer's gradient is unchanged."""
    grads = {}
    for adversarial in (False, True):
        torch.manual_seed(0)
        sampler = FrameSampler(W, k=5, adversarial=adversarial, grl_lambda=lam).double().train()
        head = nn.Linear(W, 8).double()
        v = randn(4, 12, W, dtype=torch.float64)
        out = sampler(v, generator=torch.Generator().manual_seed(11))
        loss = torch.tanh(head(out.frames)).mean(1).square().sum() + head(out.rest).pow(2).mean()
        loss.backward()
        grads[adversarial] = ({n: p.grad.clone() for n, p in sampler.named_parameters()},
                              {n: p.grad.clone() for n, p in head.named_parameters()},
                              out.indices)
    plain, adv = grads[False], grads[True]
    torch.testing.assert_close(plain[2], adv[2])                   # the same selection
    for n in plain[0]:
        assert plain[0][n].abs().sum() > 0, n
        torch.testing.assert_close(adv[0][n], -lam * plain[0][n], rtol=1e-10, atol=1e-14)
    for n in plain[1]:
        torch.testing.assert_close(adv[1][n], plain[1][n], rtol=0, atol=0)


def test_random_sampler_is_uniform_and_parameter_free():
    sampler = FrameSampler(W, k=3, mode="random")
    assert list(sampler.parameters()) == []
    v = randn(2000, 10, W)
    out = sampler(v, generator=torch.Generator().manual_seed(0))
    assert (out.indices.diff(dim=-1) > 0).all() and (out.hard.sum(-1) == 3).all()
    torch.testing.assert_close(out.frames, v.gather(1, out.indices[..., None].expand(-1, -1, W)))
    counts = out.hard.sum(0)                      # expected 600 per frame, sd ≈ 22
    assert (counts - 600).abs().max() < 100
    torch.testing.assert_close(out.soft, torch.full((2000, 10), 0.1))
    with pytest.raises(ValueError, match="mode"):
        FrameSampler(W, k=3, mode="topk")
