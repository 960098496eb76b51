"""Tests of the AV-NAS operation library (Table 1): shapes, gradients, semantics, export."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import avsearch.ops.attention  # noqa: F401  (registration)
import avsearch.ops.basic  # noqa: F401
import avsearch.ops.ssm  # noqa: F401
from avsearch.ops.attention import AttentionCore, TransformerStage
from avsearch.ops.basic import Pooled
from avsearch.ops.registry import OpConfig, get_op, list_ops
from avsearch.ops.ssm import CrossMamba, MambaBlock, S6

WIDTH = 16
CFG = OpConfig(heads=2, d_state=4, max_len=8)

# (name, kind) for every candidate of Table 1, plus the S kind and the Conv_<k> family.
CASES = [
    ("Skip", "M"), ("FFN", "M"), ("MLP", "M"), ("Conv_k", "M"), ("Conv_3", "M"),
    ("Conv_4", "M"), ("Conv_5", "M"), ("SelfAttention", "M"), ("SelfSSM", "M"),
    ("Skip", "U"), ("SiLU", "U"), ("LayerNorm", "U"),
    ("Add", "D"), ("Hadamard", "D"),
    ("CrossAttention", "I"), ("CrossSSM", "I"),
    ("Add", "F"), ("GatedAttention", "F"),
    ("SelfAttention", "T"), ("SelfSSM", "T"),
    ("SelfAttention", "S"), ("SelfSSM", "S"),
]
BINARY = {"D", "I", "F"}
POOLED = {"T"}


def build(name: str, kind: str, width: int = WIDTH, config: OpConfig = CFG) -> nn.Module:
    torch.manual_seed(0)
    return get_op(name, kind).build(name, width, config)


def apply(module: nn.Module, kind: str, x: Tensor, y: Tensor | None = None) -> Tensor:
    return module(x, y) if kind in BINARY else module(x)


def inputs(batch: int = 3, length: int = 5, width: int = WIDTH, dtype=torch.float32,
           seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, length, width, generator=g, dtype=dtype),
            torch.randn(batch, length, width, generator=g, dtype=dtype))


def scan_reference(u, delta, a, b, c, reverse: bool = False):
    """Direct recurrence over time, channels last: u, delta (B, L, w); a (w, N); b, c (B, L, N).

    ``reverse`` runs the recurrence from the last step to the first (true reverse time).
    """
    batch, length, width = u.shape
    h = u.new_zeros(batch, width, a.shape[1])
    out = [None] * length
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        d = delta[:, t, :, None]
        h = torch.exp(d * a) * h + d * b[:, t, None, :] * u[:, t, :, None]
        out[t] = (h * c[:, t, None, :]).sum(-1)
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------- registry

def test_registry_holds_table_1():
    assert set(list_ops()) >= {
        "Skip", "FFN", "MLP", "Conv_k", "Conv_<k>", "SelfAttention", "SelfSSM", "SiLU",
        "LayerNorm", "Add", "Hadamard", "CrossAttention", "CrossSSM", "GatedAttention"}


@pytest.mark.parametrize("name,kind", CASES)
def test_spec_arity_and_pooling(name, kind):
    spec = get_op(name, kind)
    assert spec.arity == (2 if kind in BINARY else 1)
    assert spec.pooled == (kind in POOLED)


# ------------------------------------------------------------------ every op, every kind

@pytest.mark.parametrize("name,kind", CASES)
def test_forward_backward_shapes_and_gradients(name, kind):
    module = build(name, kind).train()
    x, y = inputs()
    x.requires_grad_(True)
    y.requires_grad_(True)
    out = apply(module, kind, x, y)
    assert out.shape == ((3, WIDTH) if kind in POOLED else (3, 5, WIDTH))
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"
    assert x.grad.abs().sum() > 0
    if kind in BINARY:
        assert y.grad.abs().sum() > 0


@pytest.mark.parametrize("name,kind", CASES)
@pytest.mark.parametrize("length", [1, CFG.max_len])
def test_float64_any_length_eval(name, kind, length):
    module = build(name, kind).double().eval()
    x, y = inputs(batch=2, length=length, dtype=torch.float64)
    out = apply(module, kind, x, y)
    assert out.dtype == torch.float64
    assert out.shape == ((2, WIDTH) if kind in POOLED else (2, length, WIDTH))
    assert torch.isfinite(out).all()
    # each sample is processed on its own: a batch of one gives the same row
    one = apply(module, kind, x[1:], y[1:])
    torch.testing.assert_close(one, out[1:])


# ------------------------------------------------------------------------ elementary ops

def test_elementary_semantics():
    x, y = inputs()
    torch.testing.assert_close(build("Skip", "U")(x), x)
    torch.testing.assert_close(build("SiLU", "U")(x), x * torch.sigmoid(x))
    ln = build("LayerNorm", "U")
    torch.testing.assert_close(ln(x), F.layer_norm(x, (WIDTH,)))
    torch.testing.assert_close(build("Add", "D")(x, y), x + y)
    torch.testing.assert_close(build("Add", "F")(x, y), x + y)
    torch.testing.assert_close(build("Hadamard", "D")(x, y), x * y)


def test_ffn_and_mlp_follow_table_1():
    x, _ = inputs()
    ffn = build("FFN", "M").eval()
    assert ffn.fc1.out_features == CFG.ffn_mult * WIDTH and ffn.fc2.out_features == WIDTH
    torch.testing.assert_close(ffn(x), ffn.fc2(torch.relu(ffn.fc1(x))))
    mlp = build("MLP", "M").eval()
    torch.testing.assert_close(mlp(x), mlp.fc(x))
    # dropout 0.1 is active in training only
    torch.manual_seed(3)
    assert not torch.allclose(mlp.train()(x), mlp.fc(x))


@pytest.mark.parametrize("name,k", [("Conv_k", CFG.conv_kernel), ("Conv_3", 3), ("Conv_4", 4),
                                    ("Conv_5", 5)])
def test_conv_is_causal_depthwise_with_kernel_k(name, k):
    module = build(name, "M")
    assert module.conv.weight.shape == (WIDTH, 1, k)
    length, t = 8, 5
    x = torch.randn(2, length, WIDTH, requires_grad=True)
    module(x)[:, t].sum().backward()
    seen = x.grad.abs().sum(dim=(0, 2)) > 0
    # output t sees exactly inputs t-k+1 .. t
    assert seen.tolist() == [t - k + 1 <= s <= t for s in range(length)]
    # depthwise: channel 0 of the output does not see channel 1 of the input
    x.grad = None
    module(x)[:, :, 0].sum().backward()
    assert x.grad[:, :, 1:].abs().sum() == 0


def test_conv_k_uses_config_kernel():
    module = get_op("Conv_k", "M").build("Conv_k", WIDTH, OpConfig(conv_kernel=5))
    assert module.conv.weight.shape[-1] == 5


# --------------------------------------------------------------------------- attention

def test_bare_self_attention_equals_handwritten_softmax_attention():
    module = build("SelfAttention", "M").eval()
    assert isinstance(module, AttentionCore)
    x, _ = inputs()
    heads, dh = CFG.heads, WIDTH // CFG.heads
    q = x @ module.q_proj.weight.T + module.q_proj.bias
    k = x @ module.k_proj.weight.T + module.k_proj.bias
    v = x @ module.v_proj.weight.T + module.v_proj.bias
    outs = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        p = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh), dim=-1)
        outs.append(p @ v[..., sl])
    torch.testing.assert_close(module(x), torch.cat(outs, dim=-1))


def test_bare_self_attention_has_no_output_projection():
    module = build("SelfAttention", "M")
    names = {n for n, _ in module.named_parameters()}
    assert names == {f"{p}_proj.{t}" for p in "qkv" for t in ("weight", "bias")}
    assert sum(p.numel() for p in module.parameters()) == 3 * (WIDTH * WIDTH + WIDTH)


def test_bare_self_attention_dropout_on_probabilities_in_training_only():
    module = build("SelfAttention", "M")
    x, _ = inputs()
    ref = module.eval()(x)
    torch.manual_seed(0)
    assert not torch.allclose(module.train()(x), ref)


@pytest.mark.parametrize("name,kind", [("SelfAttention", "M"), ("CrossAttention", "I"),
                                       ("SelfAttention", "T"), ("SelfAttention", "S")])
def test_heads_must_divide_width(name, kind):
    with pytest.raises(ValueError, match=r"heads \(3\).*width \(16\)"):
        get_op(name, kind).build(name, WIDTH, OpConfig(heads=3))


def test_cross_attention_matches_torch_multihead_attention():
    module = build("CrossAttention", "I").eval()
    ref = nn.MultiheadAttention(WIDTH, CFG.heads, batch_first=True).eval()
    core = module.attn.core
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([core.q_proj.weight, core.k_proj.weight,
                                            core.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([core.q_proj.bias, core.k_proj.bias, core.v_proj.bias]))
        ref.out_proj.weight.copy_(module.attn.out_proj.weight)
        ref.out_proj.bias.copy_(module.attn.out_proj.bias)
    x, y = inputs()
    y = y[:, :4]  # keys/values may even have another length
    expected = module.norm(x + ref(x, y, y, need_weights=False)[0])
    torch.testing.assert_close(module(x, y), expected)


def test_cross_attention_reads_y_as_an_unordered_set_and_residual_is_x():
    module = build("CrossAttention", "I").eval()
    x, y = inputs()
    out = module(x, y)
    assert not torch.allclose(out, module(x, y + 1.0))
    # keys/values carry no position: permuting y's steps changes nothing
    torch.testing.assert_close(module(x, y[:, [4, 2, 0, 3, 1]]), out)
    # with the attention output projection zeroed only LN(x) is left
    with torch.no_grad():
        module.attn.out_proj.weight.zero_()
        module.attn.out_proj.bias.zero_()
    torch.testing.assert_close(module(x, y), module.norm(x))


def test_gated_attention_is_a_convex_combination():
    module = build("GatedAttention", "F")
    x, y = inputs()
    torch.testing.assert_close(module(x, x), x)
    out = module(x, y)
    lo, hi = torch.minimum(x, y), torch.maximum(x, y)
    assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()
    # one gate ρ per step, shared by all channels, and varying over time
    diff = x - y
    rho = ((out - y) * diff).sum(-1, keepdim=True) / (diff * diff).sum(-1, keepdim=True)
    torch.testing.assert_close(out, y + rho * diff)
    assert rho.std(dim=1).mean() > 1e-4


def test_transformer_stage_is_a_pre_norm_block_with_residuals():
    module = build("SelfAttention", "S").eval()
    assert isinstance(module, TransformerStage)
    x, _ = inputs()
    with torch.no_grad():
        for lin in (module.block.attn.out_proj, module.block.ffn.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    # both sublayers silenced: block is the identity, stage = LN(x + positions)
    torch.testing.assert_close(module(x), module.norm(x + module.pos.weight[:5]))


def test_self_attention_t_is_block_then_pool():
    module = build("SelfAttention", "T").eval()
    assert isinstance(module, Pooled) and isinstance(module.block, TransformerStage)
    x, _ = inputs()
    torch.testing.assert_close(module(x), module.block(x).mean(dim=1))


def test_positional_embedding_rejects_long_sequences():
    module = build("SelfAttention", "T")
    with pytest.raises(ValueError, match="max_len 8"):
        module(torch.randn(2, CFG.max_len + 1, WIDTH))


# ---------------------------------------------------------------------------------- SSM

def test_s6_structure_and_initialisation():
    module = build("SelfSSM", "M")
    assert isinstance(module, S6)
    names = {n for n, _ in module.named_parameters()}
    assert names == {"select.x_proj.weight", "select.dt_proj.weight", "select.dt_proj.bias",
                     "A_log", "D"}
    rank = math.ceil(WIDTH / 16)
    assert module.select.x_proj.weight.shape == (rank + 2 * CFG.d_state, WIDTH)
    assert module.select.dt_proj.weight.shape == (WIDTH, rank)
    torch.testing.assert_close(
        module.A_log, torch.log(torch.arange(1.0, CFG.d_state + 1)).expand(WIDTH, -1))
    torch.testing.assert_close(module.D, torch.ones(WIDTH))
    dt = F.softplus(module.select.dt_proj.bias)
    assert (dt >= 1e-3 * (1 - 1e-5)).all() and (dt <= 1e-1 * (1 + 1e-5)).all()
    big = S6(256, dt_rank=None)
    assert big.select.dt_rank == 16
    assert S6(WIDTH, dt_rank=3).select.dt_rank == 3


def test_s6_matches_a_direct_recurrence():
    module = build("SelfSSM", "M").double()
    x, _ = inputs(dtype=torch.float64)
    sel = module.select
    proj = x @ sel.x_proj.weight.T
    r, n = sel.dt_rank, CFG.d_state
    delta = F.softplus(proj[..., :r] @ sel.dt_proj.weight.T + sel.dt_proj.bias)
    expected = scan_reference(x, delta, -torch.exp(module.A_log), proj[..., r:r + n],
                              proj[..., r + n:]) + x * module.D
    torch.testing.assert_close(module(x), expected)


@pytest.mark.parametrize("name,kind", [("SelfSSM", "M"), ("SelfSSM", "S")])
def test_ssm_is_causal(name, kind):
    module = build(name, kind).eval()
    x, other = inputs(length=8)
    t = 3
    changed = x.clone()
    changed[:, t + 1:] = other[:, t + 1:]
    a, b = module(x), module(changed)
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_mamba_block_has_residual_and_expansion_2():
    module = build("SelfSSM", "S")
    assert isinstance(module, MambaBlock)
    assert module.in_proj.out_features == 2 * 2 * WIDTH
    assert module.ssm.A_log.shape == (2 * WIDTH, CFG.d_state)
    x, _ = inputs()
    with torch.no_grad():
        module.out_proj.weight.zero_()
    torch.testing.assert_close(module(x), x)


def test_mamba_block_wiring():
    module = build("SelfSSM", "S").eval()
    x, _ = inputs()
    x_in, z = module.in_proj(module.norm(x)).chunk(2, dim=-1)
    inner = module.ssm(F.silu(module.conv(x_in))) * F.silu(z)
    torch.testing.assert_close(module(x), x + module.out_proj(inner))
    assert module.conv.kernel_size == CFG.ssm_conv


def test_self_ssm_t_is_block_then_pool():
    module = build("SelfSSM", "T")
    assert isinstance(module, Pooled) and isinstance(module.block, MambaBlock)
    x, _ = inputs()
    torch.testing.assert_close(module(x), module.block(x).mean(dim=1))


def cross_mamba_reference(m: CrossMamba, x: Tensor, y: Tensor) -> Tensor:
    """Eqs. 15-32 written out in float64 from the module's weights, loops over time."""
    def ln(v, norm):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def causal_conv(v, conv):  # out_t = bias + Σ_j w[k-1-j] · v_{t-j}
        w, bias = conv.conv.weight[:, 0], conv.conv.bias
        k = w.shape[-1]
        return torch.stack([bias + sum(w[:, k - 1 - j] * v[:, t - j]
                                       for j in range(k) if t - j >= 0)
                            for t in range(v.shape[1])], dim=1)

    def silu(v):
        return v / (1 + torch.exp(-v))

    lin_x = ln(x, m.norm_x) @ m.linear_x.weight.T
    c_x = causal_conv(lin_x, m.conv_x)                                      # (15)
    c_x_silu = silu(lin_x)                                                  # (16)
    c_x_res = lin_x                                                         # (17)
    c_y = causal_conv(ln(y, m.norm_y) @ m.linear_y.weight.T, m.conv_y)      # (18)
    sel = m.select
    r, n = sel.dt_rank, sel.d_state
    proj = c_y @ sel.x_proj.weight.T
    b_y, c_y_ = proj[..., r:r + n], proj[..., r + n:]                       # (19, 20)
    delta = torch.log1p(torch.exp(proj[..., :r] @ sel.dt_proj.weight.T + sel.dt_proj.bias))
    z = scan_reference(c_x, delta, -torch.exp(m.A1_log), b_y, c_y_)         # (22-26)
    z_back = scan_reference(c_x, delta, -torch.exp(m.A2_log), b_y, c_y_, reverse=True)
    big_z = z + z_back                                                      # (31)
    return ((big_z + c_x_res) * silu(c_x_silu)) @ m.out_proj.weight.T       # (32)


def test_cross_ssm_matches_equations_15_to_32():
    module = build("CrossSSM", "I").double()
    assert isinstance(module, CrossMamba)
    with torch.no_grad():  # make the two state matrices and the norms differ from init
        module.A2_log.add_(0.5 * torch.rand_like(module.A2_log))
        module.norm_x.weight.add_(0.1 * torch.randn_like(module.norm_x.weight))
        module.norm_y.bias.add_(0.1 * torch.randn_like(module.norm_y.bias))
        module.select.dt_proj.bias.add_(2.0)  # larger steps: the state carries further
    x, y = inputs(length=7, dtype=torch.float64)
    torch.testing.assert_close(module(x, y), cross_mamba_reference(module, x, y))


def test_cross_ssm_backward_scan_runs_in_reverse_time():
    """With the forward scan made memoryless (A_1 → −∞), CrossSSM must be anti-causal.

    Output step t then sees inputs at steps ≥ t (up to the causal conv's k−1 look-back):
    the backward scan reads c_x *and* Δ, B, C in reverse time. Reversing only c_x (the
    authors' code) would make the last output step depend on y's first steps.
    """
    module = build("CrossSSM", "I").double()
    with torch.no_grad():
        module.A1_log.fill_(30.0)
        module.select.dt_proj.bias.add_(2.0)
    length, k = 8, CFG.ssm_conv
    x, y = inputs(length=length, dtype=torch.float64)
    _, noise = inputs(length=length, dtype=torch.float64, seed=7)
    out = module(x, y)
    early = slice(0, length - k)  # steps that the last step's conv window does not see
    y2, x2 = y.clone(), x.clone()
    y2[:, early] = noise[:, early]
    x2[:, early] = noise[:, early]
    torch.testing.assert_close(module(x, y2)[:, -1], out[:, -1])
    torch.testing.assert_close(module(x2, y)[:, -1], out[:, -1])
    # ... while the first output step hears y's last step through Δ, B, C
    y3 = y.clone()
    y3[:, -1] = noise[:, -1]
    assert not torch.allclose(module(x, y3)[:, 0], out[:, 0])


def test_cross_ssm_depends_on_y_only_through_delta_b_c():
    module = build("CrossSSM", "I")
    x, y = inputs()
    assert not torch.allclose(module(x, y), module(x, y + torch.randn_like(y)))
    # no path from y without the selection projection
    with torch.no_grad():
        module.select.x_proj.weight.zero_()
    torch.testing.assert_close(module(x, y), module(x, torch.randn_like(y)))


# ------------------------------------------------------------------------------ T and S

@pytest.mark.parametrize("name", ["SelfAttention", "SelfSSM"])
def test_t_ops_pool_and_are_invariant_to_batch_order(name):
    module = build(name, "T").eval()
    x, _ = inputs(batch=4)
    out = module(x)
    assert out.shape == (4, WIDTH)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(module(x[perm]), out[perm])


def test_self_attention_t_sees_order_only_through_positional_embedding():
    module = build("SelfAttention", "T").eval()
    x, _ = inputs()
    perm = torch.tensor([3, 1, 4, 0, 2])
    assert not torch.allclose(module(x[:, perm]), module(x), atol=1e-4)
    with torch.no_grad():
        module.block.pos.weight.zero_()
    torch.testing.assert_close(module(x[:, perm]), module(x))


# ------------------------------------------------------------------------------- export

# one module of each kind (both attention and SSM paths among them)
EXPORT_CASES = [("SelfAttention", "M"), ("SelfSSM", "M"), ("LayerNorm", "U"), ("Hadamard", "D"),
                ("CrossSSM", "I"), ("GatedAttention", "F"), ("SelfAttention", "T"),
                ("SelfSSM", "S")]


@pytest.mark.parametrize("name,kind", EXPORT_CASES)
def test_torch_export_with_dynamic_batch_and_length(name, kind):
    module = build(name, kind).eval()
    n_args = 2 if kind in BINARY else 1
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("length", min=2, max=CFG.max_len)}
    program = torch.export.export(module, inputs()[:n_args], dynamic_shapes=(dims,) * n_args)
    args = inputs(batch=4, length=7, seed=5)[:n_args]
    torch.testing.assert_close(program.module()(*args), module(*args))


def test_fast_dropout_statistics_gradient_and_seed():
    """Drops a fraction p, keeps the mean, masks the gradient like the values, follows the seed."""
    from avsearch.ops.dropout import Dropout, dropout

    x = torch.ones(200, 50, 40, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.3)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 65536 / (65536 - round(0.3 * 65536))))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    torch.manual_seed(1)
    assert torch.equal(dropout(x.detach(), 0.3) != 0, kept)
    m = Dropout(0.3).eval()
    assert m(x) is x and dropout(x, 0.0) is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_relu_dropout_is_dropout_of_relu_value_for_value(dtype):
    """The FFN's fused ReLU + dropout: the same draws give the same values and gradients as
    the two in a row (zeros, a negative zero and positives included)."""
    from avsearch.ops.dropout import dropout, relu_dropout

    x = torch.randn(30, 25, 64).to(dtype)
    x[0, 0, :3] = torch.tensor([0.0, -0.0, 1e-30])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(3)
    fused = relu_dropout(a, 0.1)
    torch.manual_seed(3)
    plain = dropout(F.relu(b), 0.1)
    assert torch.equal(fused, plain) and fused.dtype == dtype
    g = torch.randn_like(fused)
    fused.backward(g)
    plain.backward(g)
    assert torch.equal(a.grad, b.grad)
    assert relu_dropout(x, 0.1, training=False).equal(F.relu(x))


def test_attention_in_bfloat16_without_autocast_keeps_its_dtype():
    """The spelled-out training path takes its softmax in float32; a bfloat16 module (no
    autocast) still multiplies values of its own dtype."""
    core = AttentionCore(16, 4, dropout=0.1).train().to(torch.bfloat16)
    out = core(torch.randn(3, 7, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_attention_with_dropout_spelled_out_matches_sdpa_without_it():
    from avsearch.ops.attention import AttentionCore

    core = AttentionCore(16, 4, dropout=1e-9).train()   # takes the spelled-out path, drops nothing
    x, y = torch.randn(3, 7, 16), torch.randn(3, 5, 16)
    out = core(x, y)
    core.eval()
    torch.testing.assert_close(out, core(x, y))


# ----------------------------------------------------------------------------- the whole registry
# a family is tested through these members (a new family needs an entry)
FAMILY_EXAMPLES = {"Conv_<k>": ("Conv_2", "Conv_5"), "TAM_<n>": ("TAM_2",), "Mamba_<n>": ("Mamba_2",),
                   "TCN_<n>": ("TCN_2",),
                   "<E_1>-<E_2>-…/<down>": ("4-2/haar", "2-2-1/maxpool", "3"),
                   "SelfAttention/<pool>": ("SelfAttention/max",), "SelfSSM/<pool>": ("SelfSSM/max",),
                   "GCN_<depth>x<hidden>": ("GCN_1x8", "GCN_3x4"), "mu<μ>": ("mu0p1", "mu10"),
                   "Transformer_<n>": ("Transformer_2",), "GCN_<n>": ("GCN_2",),
                   "MMGCN_<n>": ("MMGCN_2",)}
# SPTCH's graph ops read items (2, 1, w) and the batch's graph (2, 2) as their context
GRAPH_KINDS = {"SG", "MM"}
SMALL = OpConfig(heads=2, d_state=4, max_len=16, tam_depths=(2, 1), tam_decoder_depth=1)


def _registered() -> list[tuple[str, str]]:
    """Every (op, cell kind) pair of the registry: each kind an op serves (an op for every
    kind, ``*``, in one of them), each family through its examples."""
    from avsearch.ops.registry import OPS

    cases = []
    for name, specs in OPS.items().items():
        members = FAMILY_EXAMPLES.get(name, ()) if specs[0].pattern is not None else (name,)
        for spec in specs:
            for kind in sorted(spec.kinds - {"*"}) or ["U"]:
                cases += [(member, kind) for member in members]
    return cases


def test_every_family_has_examples():
    from avsearch.ops.registry import OPS

    families = {n for n, specs in OPS.items().items() if specs[0].pattern is not None}
    assert families == set(FAMILY_EXAMPLES)


@pytest.mark.parametrize("name,kind", _registered())
def test_every_registered_op_builds_and_keeps_its_shape(name, kind):
    spec = get_op(name, kind)
    torch.manual_seed(0)
    module = spec.build(name, WIDTH, SMALL).train()
    x, y = inputs(batch=2, length=6)
    args, length = [x, y][:spec.arity], 6
    if kind in GRAPH_KINDS:
        args, length = [x[:, :1], y[:, :1]][:spec.arity - 1] + [torch.tensor([[1.0, 0.5], [0.5, 1.0]])], 1
    out = module(*args)
    assert out.shape == ((2, WIDTH) if spec.pooled else (2, length, WIDTH))
    assert torch.isfinite(out).all()
    if spec.absent:
        assert not out.any()
    params = [p for p in module.parameters() if p.requires_grad]
    if params and out.requires_grad:
        out.float().square().sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
