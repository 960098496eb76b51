"""The presets are the expert networks of the AV-NAS paper, not just names.

Eqs. 6-8: with ``up_down=false`` the transformer preset's encoder is a post-norm Transformer
encoder layer (PyTorch's own, used here as the independent reference). Eqs. 9-11: the mamba
preset's E1 is the Mamba mixer (in_proj → conv → SiLU → S6, gated by SiLU(z), out_proj).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import avsearch
from avsearch.ops.ssm import MambaBlock


def cell(net, name, op):
    return net.cells[name.replace(".", "__")].ops[op]


def test_transformer_preset_is_a_transformer_encoder_layer():
    space = avsearch.get_space("av_nas", d=16, heads=2, up_down=False, modalities="visual:16")
    net = avsearch.compile_space(space, "fixed", space.presets["transformer"]).eval()
    ref = nn.TransformerEncoderLayer(16, 2, dim_feedforward=64, dropout=0.0, batch_first=True).eval()
    core = cell(net, "visual.M1", "SelfAttention")
    mlp, ffn = cell(net, "visual.M2", "MLP"), cell(net, "visual.M3", "FFN")
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([core.q_proj.weight, core.k_proj.weight, core.v_proj.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([core.q_proj.bias, core.k_proj.bias, core.v_proj.bias]))
        ref.self_attn.out_proj.load_state_dict(mlp.fc.state_dict())
        ref.linear1.load_state_dict(ffn.fc1.state_dict())
        ref.linear2.load_state_dict(ffn.fc2.state_dict())
        ref.norm1.load_state_dict(cell(net, "visual.U3", "LayerNorm").state_dict())
        ref.norm2.load_state_dict(cell(net, "visual.U4", "LayerNorm").state_dict())
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(net.node_outputs(x)["visual.U4"], ref(x), rtol=1e-5, atol=1e-5)


def test_mamba_preset_encoder_is_the_mamba_mixer():
    space = avsearch.get_space("av_nas", d=16, e=2, heads=2, conv_kernels="4", modalities="visual:16")
    net = avsearch.compile_space(space, "fixed", space.presets["mamba"]).eval()
    block = MambaBlock(16, space.op_config, expand=2).eval()  # same conv width (4) as Conv_4
    up1, up2, down = (net.layers[f"visual__{n}"] for n in ("Up1", "Up2", "Down"))
    with torch.no_grad():
        for lin in (up1, up2, down):
            lin.bias.zero_()  # Mamba's projections have no bias
        block.in_proj.weight.copy_(torch.cat([up1.weight, up2.weight]))
        block.out_proj.weight.copy_(down.weight)
        block.conv.load_state_dict(cell(net, "visual.M1", "Conv_k").state_dict())
        block.ssm.load_state_dict(cell(net, "visual.M2", "SelfSSM").state_dict())
    x = torch.randn(3, 9, 16)
    x_in, z = block.in_proj(x).chunk(2, dim=-1)
    mixer = block.out_proj(block.ssm(F.silu(block.conv(x_in))) * F.silu(z))
    outs = net.node_outputs(x)
    torch.testing.assert_close(outs["visual.U3"], mixer, rtol=1e-5, atol=1e-5)   # Eq. 9
    ln = cell(net, "visual.U4", "LayerNorm")
    torch.testing.assert_close(outs["visual.U4"], ln(2 * mixer), rtol=1e-5, atol=1e-5)  # Eq. 10
