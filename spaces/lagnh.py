"""The LAGNH space: lightweight augmented graph network hashing of images with auxiliary
semantics (paper 004, §3, Eqs. 1-7 and 13, Table 1).

Inputs: an image's deep features x (one modality, (N, 1, D)) and its auxiliary semantics y
(``aux``, (N, 1, A): detected objects or tags, :attr:`avsearch.data.Split.aux`)::

    sem   = semantics(y)                       Tags | NoTags (LAGNH-no-aux: zeros)
    x̄     = visual.proj(x),  ȳ = aux.proj(sem)  linear maps to d' (Eqs. 1-2's x̄, ȳ)
    X^att = attention(x̄, ȳ)                     AuxAttention (Eqs. 1-2) | NoAttention (x̄)
    y_μ   = fusion(sem)                         mu0p1 | mu1 | mu10: S = μ·S^v + S^a (Eq. 5)
    H     = gcn(X^att, y_μ)                     GCN_<depth>x<hidden> over the augmented graph
    Z     = hash(H)                             linear d' → bits; codes = sign(Z) (Eq. 13)
    prior = prior(Z)                            Prior (the discriminator sees Z) | NoPrior
    logits = aux.logits(Z)                      linear bits → A, Eq. 11's classifier

Cells and their kinds: ``semantics`` (SEM), ``attention`` (ATT), ``fusion`` (MU), ``gcn``
(GCN: depth {1, 2, 3} × hidden width {256, 512, 1024}), ``prior`` (ADV): 2·2·3·9·2 = 216
architectures. The objective ``lagnh`` (Eq. 12) reads the nodes ``semantics`` (S^a's y and
Eq. 11's targets), ``prior`` and ``aux.logits``; a network whose ``semantics`` or ``prior``
is absent gets no term that needs it.

Presets: ``paper`` (Table 1 on MS COCO: attention, μ = 1, two graph convolutions through
1024 units, the discriminator) and ``no_aux`` (Table 5's LAGNH-no-aux: no auxiliary
semantics anywhere, so no attention and a graph of S^v alone; the same GCN and discriminator).

Reference notes: what we chose, and where the authors' code differs from the paper.

* **A query's code never depends on its batch.** The paper's graph is over the training set
  (attention's j and the GCN's S range over all n training images) and says a query is
  encoded "by forward propagation" with its own auxiliary semantics, without saying how a
  query joins the graph. We fix a bank of ``anchors`` training images (drawn by the run's
  seed, 512 by default as the paper's batch of 1,024 is on a 5,000-image training set) as the
  graph's nodes, kept in the network (:mod:`avsearch.supernet`), and every item, in training
  and at query time alike, joins it as a leaf: edges to the anchors and to itself
  (:mod:`avsearch.ops.lagnh`). Training and encoding run the same function, and ``avsearch
  encode`` gives an image the same code alone or in any batch. The losses still relate the
  items of a training batch, as the paper's do.
* **The code (christinecui/LAGNH) differs from the paper in three ways**; we follow the paper:
  1. it builds the graph per mini-batch (1,024 in training, 256 when encoding), so a query's
     code depends on the other images in its batch (we use the anchors above);
  2. it sets the fusion factor to 0, and it multiplies the *auxiliary* graph, so its
     adjacency is the Gaussian kernel on the attentive features alone and the auxiliary graph
     is only the reconstruction target; we use Eq. 5, S = μ·S^v + S^a, with μ a choice
     ({0.1, 1, 10}; the paper's 1 in ``paper``);
  3. its auxiliary vector has exactly the evaluation classes' dimensions (80 on MS COCO); we
     take any width A of ``Split.aux`` (the ``aux`` option, read off the data), and labels are
     never an input.
* μ as y/√μ: the GCN normalises S (D^{-1/2} S D^{-1/2}), which a common factor leaves
  unchanged, so S^v + (y/√μ)(y/√μ)ᵀ gives Eq. 5's normalised graph (:class:`~avsearch.ops.lagnh.Fusion`).
* The Gaussian kernel's bandwidth (Eq. 3's σ, not given in the paper; the code divides
  squared distances of 512-d features by 2, which leaves little but the self-loops) is
  2σ² = ``bandwidth`` (0.1) × the mean squared distance between the anchors' attentive
  features, so only close neighbours count. At 1.0 the kernel is dense (≈ e⁻¹ between typical
  pairs) and a leaf's own features weigh about 1/(1 + 0.37·m) against m anchors: on the
  tagged test images (``avsearch.testing.helpers.tagged_image_dataset``, seed 0) ``no_aux``
  then gave one code for every image. At 0.1 it still does for some seeds: without tags its
  loss is L_quan + L_GAN, with no term that keeps two images' codes apart.
* d' = 512 by default (the code's ``common_img``/``common_pl`` width; the paper does not say).
  The GCN cell keeps the width d' (every cell does), so its last graph convolution maps the
  hidden width back to d' and the fixed ``hash`` layer maps d' to the code length; as
  propagation is linear, the two are Table 1's GC layer 2 factored through d' (>= bits).
* S^a = yᵀy (Eq. 4) on the raw tags; the code uses their cosine instead.
"""
from __future__ import annotations

from avsearch.errors import SpaceError
from avsearch.graph import AUX_INPUT, SearchSpace
from avsearch.ops.names import mu_name
from avsearch.ops.registry import OpConfig
from avsearch.options import (AT_LEAST_ONE, POSITIVE, Check, Option, integers, modality_widths,
                              numbers)
from avsearch.spaces import register_space

__all__ = ["SEMANTICS", "ADVERSARY", "LOGITS", "PRESETS"]

# the nodes the lagnh objective reads (Network.node_outputs)
SEMANTICS, ADVERSARY, LOGITS = "semantics", "prior", "aux.logits"

DISTINCT_POSITIVE = Check(lambda v: min(v) > 0 and len(set(v)) == len(v), "distinct numbers > 0")
DISTINCT = Check(lambda v: min(v) >= 1 and len(set(v)) == len(v), "distinct integers >= 1")


# preset -> (semantics, attention, μ, (depth, hidden), adversary)
PRESETS = {
    "paper": ("Tags", "AuxAttention", 1.0, (2, 1024), "Prior"),      # Table 1, §4.2 (μ = 1)
    "no_aux": ("NoTags", "NoAttention", 1.0, (2, 1024), "Prior"),    # Table 5, LAGNH-no-aux
}

OPTIONS = {
    "d": Option(512, int, "width d' of x̄, ȳ and the attentive features (the code's 512)",
                AT_LEAST_ONE),
    "bits": Option(64, int, "hash code length r", AT_LEAST_ONE),
    "modalities": Option({"visual": 4096}, modality_widths,
                         "the image features, NAME:WIDTH (one modality; e.g. visual:4096 for "
                         "VGG16 fc7)", Check(lambda m: len(m) == 1, "one modality")),
    "aux": Option(80, int, "width A of the auxiliary semantics (a run reads it off the data)",
                  AT_LEAST_ONE, from_data=lambda data: data.aux_width or 80),
    "anchors": Option(512, int, "training images that are the graph's nodes (a run takes at "
                                "most its training set)", AT_LEAST_ONE,
                      from_data=lambda data: min(512, len(data.split("train")))),
    "bandwidth": Option(0.1, float, "the Gaussian kernel's 2σ² (Eq. 3) as a multiple of the "
                                    "anchors' mean squared distance", POSITIVE),
    "depths": Option((1, 2, 3), integers, "GCN depths (graph convolutions)", DISTINCT),
    "hiddens": Option((256, 512, 1024), integers, "GCN hidden widths", DISTINCT),
    "mus": Option((0.1, 1.0, 10.0), numbers, "fusion factors μ of S = μ·S^v + S^a",
                  DISTINCT_POSITIVE),
}


@register_space("lagnh", "LAGNH image hashing with auxiliary semantics (attention, μ, GCN depth "
                         "and width, discriminator; Table 1)", OPTIONS)
def lagnh(d, bits, modalities, aux, anchors, bandwidth, depths, hiddens, mus) -> SearchSpace:
    (modality, width), = modalities.items()
    width = d if width is None else width
    if modality == AUX_INPUT:
        raise SpaceError(f"space 'lagnh': the image modality cannot be named {AUX_INPUT!r}")
    config = dict(d=d, bits=bits, modalities={modality: width}, aux=aux, anchors=anchors,
                  bandwidth=bandwidth, depths=list(depths), hiddens=list(hiddens), mus=list(mus))
    space = SearchSpace("lagnh", config, OpConfig(anchors=anchors, bandwidth=bandwidth))
    x = space.input(modality, width)
    y = space.input(AUX_INPUT, "aux")
    sem = space.choice(SEMANTICS, "SEM", ["Tags", "NoTags"], [y])
    xbar = space.fixed(f"{modality}.proj", "Linear", [x], "d")
    ybar = space.fixed("aux.proj", "Linear", [sem], "d")
    att = space.choice("attention", "ATT", ["AuxAttention", "NoAttention"], [xbar, ybar])
    fused = space.choice("fusion", "MU", [mu_name(m) for m in mus], [sem])
    h = space.choice("gcn", "GCN", [f"GCN_{n}x{w}" for n in depths for w in hiddens], [att, fused])
    z = space.fixed("hash", "Linear", [h], "bits")
    space.choice(ADVERSARY, "ADV", ["Prior", "NoPrior"], [z])
    space.fixed(LOGITS, "Linear", [z], "aux")
    space.output(space.fixed("codes", "MeanPool", [z], "bits"),
                 auxiliary=(SEMANTICS, ADVERSARY, LOGITS))

    for name, (tags, attention, mu, (depth, hidden), adversary) in PRESETS.items():
        choices = {SEMANTICS: tags, "attention": attention, "fusion": mu_name(mu),
                   "gcn": f"GCN_{depth}x{hidden}", ADVERSARY: adversary}
        if all(op in space.candidates(c) for c, op in choices.items()):
            space.preset(name, choices)
    return space
