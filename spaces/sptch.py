"""The SPTCH space: video-text cross-modal hashing (paper 003, §3, Eqs. 3-9, Fig. 1).

Two inputs: a video's frame features (B, T, Dv) and its caption (token ids (B, L), or
precomputed token features (B, L, Dt)), and one output per modality, the two *towers*::

    visual.embed = Linear(frames)           text.embed = Embed(tokens)      to width d
    visual.encoder(visual.embed, frames)    text.encoder(text.embed, tokens)
        Transformer_n | Mamba_n, n in {1, 2, 4}: positions, n blocks, LN, mean over the
        real positions (padding and dropped frames/tokens masked out)
    visual.codes = Hash(visual.encoder)     text.codes = Hash(text.encoder)  tanh(FC); sign

and, beside them, the *semantic hashing network* that Algorithm 1's first phase trains and
whose codes B the towers learn to match (Eq. 14)::

    sh.visual, sh.text (given: the items' collaboration features X^v, X^t), sh.graph (given:
    the batch's rows and columns of the collaboration graph S, Eqs. 1-2)
    V^v = sh.visual.enc = Linear(X^v)       V^t = sh.text.enc = Linear(X^t)
    V^gv = sh.visual.gcn(V^v, S)            V^gt = sh.text.gcn(V^t, S)      GCN_n | NoGCN (Eq. 3)
    V^j = sh.joint(V^v, V^t, S)                                             MMGCN_n | NoMMGCN (Eqs. 4-5)
    H^v = sh.visual.latent(V^v, V^gv)       H^t = sh.text.latent(V^t, V^gt) ConcatFC | Sum | GraphOnly
    sh.visual.recon = Linear(H^v) ≈ X^v     sh.text.recon = Linear(H^t) ≈ X^t   (Eq. 6)
    sh.visual.proj, sh.text.proj, sh.joint.proj = Linear(H^v), Linear(H^t), Linear(V^j) to bits

The composite H of Eq. 7 is tanh(FC([H^v; H^t; V^j])), and an FC of a concatenation is the
sum of one linear map per part, so the objective forms H = tanh(sh.visual.proj + sh.text.proj
+ sh.joint.proj) and B = sign(H). The text GCN and the text aggregation follow the video's
choice (one decision, their own weights).

Cells: ``visual.encoder`` and ``text.encoder`` (SE: {Transformer, Mamba} × ``depths``),
``sh.visual.gcn`` (SG: NoGCN and GCN_n for n in ``gcn_depths``), ``sh.joint`` (MM: MMGCN_n
and NoMMGCN), ``sh.visual.latent`` (AGG): 6·6·3·3·3 = 972 architectures by default.

Presets: ``paper`` (§4.1.3: four Transformer layers per tower; both GCNs, at depth 2, which
the paper does not give; the FC aggregation) and ``two_tower`` (the towers trained without
graph convolutions: NoGCN, NoMMGCN, H = V).

Reference notes: what we chose, and where the paper is silent.

* **A query's code never depends on its batch, and a caption is encoded without its video.**
  In the paper the graph S and its GCNs serve only Algorithm 1's first phase, which learns
  the codes B; the codes of a video or a caption come from its own transformer and hash
  layer (§3.1.2, "Obtain B via GCN and encoder" for training only). Here the graph is a
  *given* node of the space that only the semantic hashing network reads, and the towers
  depend on their own input alone (:meth:`~avsearch.graph.SearchSpace.output` checks both);
  ``avsearch encode`` and ``export`` run one tower at a time.
* The semantic hashing network's inputs X^v, X^t are the collaboration features the graph is
  built from (the objective gives them: the mean of a video's standardised frames; a
  caption's TF-IDF vector, as :func:`avsearch.losses.sptch.tfidf` explains, or the mean of
  its precomputed token features); its "two encoders" are one linear layer each (the paper
  does not describe them); its decoders one linear layer each.
* The hash layer is tanh(FC(mean)) over the tower's positions; the paper's FC-then-mean is
  the same linear map, and tanh gives the relaxed code Z that Eqs. 11-15 compare.
* Mamba blocks (not in the paper; avsearch's SSM op) are causal; the Transformer's are
  bidirectional, as the paper's. The paper's width is 256; ``d`` defaults to 64 for CPUs.
"""
from __future__ import annotations

from avsearch.errors import SpaceError
from avsearch.graph import SearchSpace
from avsearch.ops.registry import OpConfig
from avsearch.options import AT_LEAST_ONE, Check, Option, integers, modality_widths
from avsearch.spaces import register_space

__all__ = ["PRESETS", "SH_VIDEO", "SH_TEXT", "SH_GRAPH", "VIDEO_LATENT", "TEXT_LATENT",
           "VIDEO_RECON", "TEXT_RECON", "PROJECTIONS", "JOINT_PROJ", "TEXT_CODES"]

# the nodes the sptch objective gives and reads (names with the default modalities; a space
# built on other modality names uses the same "sh." names)
SH_VIDEO, SH_TEXT, SH_GRAPH = "sh.visual", "sh.text", "sh.graph"
VIDEO_LATENT, TEXT_LATENT = "sh.visual.latent", "sh.text.latent"
VIDEO_RECON, TEXT_RECON = "sh.visual.recon", "sh.text.recon"
JOINT_PROJ = "sh.joint.proj"
PROJECTIONS = ("sh.visual.proj", "sh.text.proj", JOINT_PROJ)
TEXT_CODES = "text.codes"

DEPTHS = Check(lambda v: min(v) >= 1 and len(set(v)) == len(v), "distinct integers >= 1")

# preset -> (video encoder, text encoder, GCN, multi-modal GCN, aggregation)
PRESETS = {
    "paper": ("Transformer_4", "Transformer_4", "GCN_2", "MMGCN_2", "ConcatFC"),
    "two_tower": ("Transformer_4", "Transformer_4", "NoGCN", "NoMMGCN", "Sum"),
}

OPTIONS = {
    "d": Option(64, int, "width of both towers and of the semantic hashing network (the paper: "
                         "256)", AT_LEAST_ONE),
    "bits": Option(64, int, "hash code length k", AT_LEAST_ONE),
    "heads": Option(4, int, "attention heads; must divide d", AT_LEAST_ONE),
    "d_state": Option(16, int, "Mamba state size", AT_LEAST_ONE),
    "dropout": Option(0.1, float, "dropout of attention probabilities and the FFN",
                      Check(lambda v: 0 <= v < 1, "in [0, 1)")),
    "modalities": Option({"visual": 196, "text": 128}, modality_widths,
                         "the video's frame features and the text, NAME:WIDTH (the text's "
                         "width: its vocabulary's size, or its token features' D)",
                         Check(lambda m: len(m) == 2, "two modalities, video then text")),
    "text": Option("text", str, "which of the two modalities is the text (a run reads it off "
                                "the data)", from_data=lambda data: data.text[0] if data.text else "text"),
    "max_len": Option(64, int, "the longest frame or token sequence (positional embeddings)",
                      AT_LEAST_ONE, from_data=lambda data: max([64, *data.lengths.values()])),
    "depths": Option((1, 2, 4), integers, "depths of each tower's encoder", DEPTHS),
    "gcn_depths": Option((1, 2), integers, "depths of the GCNs (besides none)", DEPTHS),
}


@register_space("sptch", "SPTCH video-text hashing: two towers (Transformer or Mamba, depth) and "
                         "a semantic hashing network (GCN depth, multi-modal GCN, aggregation)",
                OPTIONS)
def sptch(d, bits, heads, d_state, dropout, modalities, text, max_len, depths,
          gcn_depths) -> SearchSpace:
    if d % heads:
        raise SpaceError(f"space 'sptch': heads={heads} must divide d={d}")
    if text not in modalities:
        raise SpaceError(f"space 'sptch': the text modality {text!r} is not one of "
                         f"{list(modalities)}")
    video = next(m for m in modalities if m != text)
    widths = {m: d if w is None else w for m, w in modalities.items()}
    config = dict(d=d, bits=bits, heads=heads, d_state=d_state, dropout=dropout,
                  modalities=widths, text=text, max_len=max_len, depths=list(depths),
                  gcn_depths=list(gcn_depths))
    space = SearchSpace("sptch", config, OpConfig(heads=heads, d_state=d_state, dropout=dropout,
                                                  max_len=max_len))
    encoders = [f"{block}_{n}" for block in ("Transformer", "Mamba") for n in depths]
    towers = {}
    for m in widths:   # the data's order
        x = space.input(m, widths[m], text=m == text)
        h = space.fixed(f"{m}.embed", "Embed" if m == text else "Linear", [x], "d")
        h = space.choice(f"{m}.encoder", "SE", encoders, [h, x])
        towers[m] = space.fixed(f"{m}.codes", "Hash", [h], "bits")

    # the semantic hashing network (Algorithm 1's first phase); see the module docstring
    graph = space.given(SH_GRAPH, 1)
    xv, xt = space.given(SH_VIDEO, widths[video]), space.given(SH_TEXT, widths[text])
    vv = space.fixed("sh.visual.enc", "Linear", [xv], "d")
    vt = space.fixed("sh.text.enc", "Linear", [xt], "d")
    gcns = ["NoGCN", *(f"GCN_{n}" for n in gcn_depths)]
    gv = space.choice("sh.visual.gcn", "SG", gcns, [vv, graph])
    gt = space.choice("sh.text.gcn", "SG", gcns, [vt, graph], follows=gv)
    joint = space.choice("sh.joint", "MM", [*(f"MMGCN_{n}" for n in gcn_depths), "NoMMGCN"],
                         [vv, vt, graph])
    aggregations = ["ConcatFC", "Sum", "GraphOnly"]
    hv = space.choice(VIDEO_LATENT, "AGG", aggregations, [vv, gv])
    ht = space.choice(TEXT_LATENT, "AGG", aggregations, [vt, gt], follows=hv)
    recon = (space.fixed(VIDEO_RECON, "Linear", [hv], widths[video]),
             space.fixed(TEXT_RECON, "Linear", [ht], widths[text]))
    projections = tuple(space.fixed(name, "Linear", [src], "bits")
                        for name, src in zip(PROJECTIONS, (hv, ht, joint)))
    space.output(towers[video], auxiliary=(towers[text], hv, ht, *recon, *projections),
                 towers=towers)

    # the quick budget's halving stage (8 candidates, one 48-step epoch a round: 14 epochs)
    # would cost this space 2.3 finetunes; 4 candidates and 24-step rounds cost half of one
    space.budgets["quick"] = {"halving": 4, "halving_steps": 24}
    for name, (enc_v, enc_t, gcn, mm, agg) in PRESETS.items():
        choices = {f"{video}.encoder": enc_v, f"{text}.encoder": enc_t, "sh.visual.gcn": gcn,
                   "sh.joint": mm, VIDEO_LATENT: agg}
        if all(op in space.candidates(c) for c, op in choices.items()):
            space.preset(name, choices)
    return space
