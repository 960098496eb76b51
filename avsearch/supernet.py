"""The supernet compiler: one search space, three kinds of network.

* ``mixed``: every cell outputs the softmax(α)-weighted sum of all its candidates (Eq. 39),
  or in training a relaxation of it that the strategy picks with :meth:`Network.set_policy`:
  Gumbel (GDAS), binary gates or one sampled path (ProxylessNAS); csp, DARTS, ProxylessNAS.
* ``single-path``: every cell runs the one candidate of the current path (SPOS, ENAS,
  random); all candidates hold weights.
* ``fixed``: the derived network, holding only the chosen candidates.

Parameters are keyed by (cell, op) — ``cells.<cell>.ops.<op>.<param>`` — in every mode, so a
state dict moves from a supernet to its derived network (prune → finetune inherits W*).

A space whose ``op_config.anchors`` is m > 0 (LAGNH) gets an anchor bank: m training items'
inputs, held as buffers (weights of the network like Standardize's statistics), which every
pass runs as rows after the batch's; ops that relate items (a graph over the anchors) read
them there, and every output is cut back to the batch, so an item's output depends on the
anchors and itself only, never on the rest of its batch.

``forward`` computes only what the output needs; :meth:`Network.node_outputs` also computes the
space's auxiliary outputs. A cell running only an absent op (VHMT's ``none`` teacher) and every
node depending only on it give zeros of their shape; a fixed network holds no layers for them
(:meth:`~avsearch.graph.SearchSpace.inactive`).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from avsearch.codes import binarize
from avsearch.errors import ArchError
from avsearch.graph import SearchSpace
from avsearch.ops.basic import MeanPool, Pooled, normalise_per_video
from avsearch.ops.frame_sampler import grad_reverse
from avsearch.ops.registry import get_op
from avsearch.ops.tam import FrameHashLayer

__all__ = ["Network", "Cell", "Standardize", "normalise_per_video", "compile_space", "MODES",
           "key", "binarize"]

Mode = Literal["mixed", "single-path", "fixed"]
MODES = ("mixed", "single-path", "fixed")
POLICIES = ("softmax", "gumbel", "binary", "single")


def key(node: str) -> str:
    """Module key of a graph node (``nn.Module`` names cannot contain dots)."""
    return node.replace(".", "__")


class Cell(nn.Module):
    """A choice cell holding its candidate ops.

    ``forward`` runs the candidates named in ``weights`` and sums them, each scaled by its
    weight (None: unscaled): all of them with softmax(α) in mixed mode, one in a single path,
    a sampled few with gates (ProxylessNAS). An op with ``adversarial_weight`` (a frame
    sampler) gets its weight through a gradient reversal: the cell's α then ascends the loss
    the network descends, as the sampler's own parameters do (AutoSSVH's min-max), instead of
    being trained to pick whatever makes training easiest.
    """

    def __init__(self, kind: str, names: list[str], width: int, space: SearchSpace):
        super().__init__()
        self.names = list(names)
        shared: dict[str, nn.Module] = {}   # weights candidates share (see ops.registry)
        self.ops = nn.ModuleDict({n: get_op(n, kind).build(n, width, space.op_config, shared)
                                  for n in names})

    def forward(self, inputs: list[torch.Tensor],
                weights: Mapping[str, torch.Tensor | float | None]) -> torch.Tensor:
        total = None
        blocks: dict[int, torch.Tensor] = {}
        for name, w in weights.items():
            op = self.ops[name]
            if isinstance(op, Pooled):   # pooled candidates sharing a block run it once
                if id(op.block) not in blocks:
                    blocks[id(op.block)] = op.block(*inputs)
                y = op(*inputs, sequence=blocks[id(op.block)])
            else:
                y = op(*inputs)
            if isinstance(w, torch.Tensor) and getattr(op, "adversarial_weight", False):
                w = grad_reverse(w)
            y = y if w is None else w * y
            total = y if total is None else total + y
        return total


class Hash(nn.Module):
    """Eq. 34: f = tanh(FC(h)); the code is sign(f) (Eq. 35)."""

    def __init__(self, width: int, bits: int):
        super().__init__()
        self.fc = nn.Linear(width, bits)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(h))


class Embed(nn.Module):
    """A text modality's tokens to width ``w_out``: token ids (B, L) look up rows of a
    (vocabulary, w_out) table; precomputed token features (B, L, w_in) are multiplied by the
    same matrix (a linear map without bias, so a padding row stays zero)."""

    def __init__(self, w_in: int, w_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(w_in, w_out) / w_out ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return x @ self.weight.to(x.dtype)
        return nn.functional.embedding(x, self.weight)


_FIXED = {"Linear": nn.Linear, "LayerNorm": lambda w_in, w_out: nn.LayerNorm(w_out),
          "FrameHash": FrameHashLayer, "MeanPool": lambda w_in, w_out: MeanPool(), "Hash": Hash,
          "Embed": Embed}


class Standardize(nn.Module):
    """(x − mean) / std per feature, with the training data's statistics as buffers.

    Part of the network (and of its weights and exported program), so raw features go in
    at training, evaluation and deployment alike. Identity until :meth:`set` is called.

    ``per_video``: then each video normalised over time (:func:`normalise_per_video`).
    """

    def __init__(self, width: int, per_video: bool = False):
        super().__init__()
        self.per_video = per_video
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        std = torch.as_tensor(std, dtype=self.std.dtype)
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        # a feature (nearly) constant in training must not blow up when it varies later
        self.std.copy_(std.clamp_min(max(1e-6, 1e-2 * float(std.mean()))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean) / self.std
        return normalise_per_video(y) if self.per_video else y


class TextStandardize(Standardize):
    """A text modality's input: token ids pass as they are; precomputed token features are
    standardised on their real positions, and the padding rows stay zero (so ops still find
    the padding, :func:`avsearch.data.text.padding_mask`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        real = (x != 0).any(-1, keepdim=True)
        return torch.where(real, super().forward(x), torch.zeros_like(x))


class Network(nn.Module):
    """A network compiled from a search space; see :func:`compile_space`.

    ``forward(*features)`` takes one (batch, m, width) tensor per modality, in
    ``space.modalities`` order, and returns the continuous codes tanh(FC(h)) of shape
    (batch, bits); :meth:`codes` returns their signs.
    """

    def __init__(self, space: SearchSpace, mode: Mode, choices: Mapping[str, str] | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "fixed" and choices is None:
            raise ArchError("a fixed network needs choices (an architecture of the space)")
        self.space = space
        self.mode = mode
        self.choices = space.validate(choices) if mode == "fixed" else None
        skip = space.inactive(self.choices) if mode == "fixed" else {}
        # single-path starts on each cell's first candidate until a strategy sets a path
        self._path = dict(self.choices) if self.choices else {
            c: space.candidates(c)[0] for c in space.cells}
        self._gates: dict[str, dict[str, torch.Tensor | float | None]] | None = None
        self.policy, self.temperature = "softmax", 1.0   # how a mixed cell weighs candidates
        self._held: dict[str, Mapping] | None = None     # the draw one_draw() holds
        self._holding = False
        self._pairs: dict[str, tuple[list[int], torch.Tensor]] = {}   # keep_drawn_mass's
        per_video = space.op_config.input_norm == "video"
        self.inputs = nn.ModuleDict({
            m: TextStandardize(space.type_of(m).width) if m in space.text_inputs
            else Standardize(space.type_of(m).width, per_video) for m in space.modalities})
        # the anchor bank (a space with op_config.anchors = m > 0, LAGNH's graph): m training
        # items' raw inputs, one (m, 1, width) buffer per modality, set by set_anchors; every
        # pass runs them as rows after the batch's and returns only the batch's rows
        self.anchors = space.op_config.anchors
        self.bank = nn.Module()
        for m in space.modalities if self.anchors else ():
            self.bank.register_buffer(key(m), torch.zeros(self.anchors, 1, space.type_of(m).width))
        self.layers = nn.ModuleDict()
        self.cells = nn.ModuleDict()
        self.alpha = nn.ParameterDict()
        self._plan: list[tuple[str, str, list[str]]] = []  # (node, role, inputs) in topo order
        self._absent_ops: dict[str, frozenset[str]] = {}    # per cell (followers too)
        for node in space.order:
            attrs = space.node(node)
            role = attrs["role"]
            ins = space.inputs_of(node)
            if role == "choice":
                self._absent_ops[node] = frozenset(
                    op for op in attrs["candidates"] if get_op(op, attrs["kind"]).absent)
            self._plan.append((node, role, ins))
            if node in skip:
                continue
            if role == "fixed":
                in_width = space.type_of(ins[0]).width
                self.layers[key(node)] = _FIXED[attrs["layer"]](in_width, space.type_of(node).width)
            elif role == "choice":
                leader = space.leader(node)
                names = [self.choices[leader]] if mode == "fixed" else list(attrs["candidates"])
                self.cells[key(node)] = Cell(attrs["kind"], names, space.type_of(node).width, space)
                if mode == "mixed" and leader == node:
                    # DARTS's init: small random α, so argmax is defined from the start.
                    self.alpha[key(node)] = nn.Parameter(1e-3 * torch.randn(len(names)))

    # ---------------------------------------------------------------- forward
    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        """The codes tanh(...) of shape (batch, bits); computes only what they depend on."""
        output = self.space.output_node
        return self._evaluate(features, (output,))[output]

    def node_outputs(self, *features: torch.Tensor, names: Sequence[str] | None = None,
                     given: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Node outputs by node name: ``names`` (default: the output and the auxiliary
        outputs) and every node they depend on, for objectives and inspection.

        ``given`` replaces nodes' values, e.g. a modality's standardised input by a view of
        it with frames dropped (AutoSSVH); what depends on them is computed from those.
        Nodes of an absent choice (e.g. VHMT's ``none`` teacher) are zeros of their shape,
        (batch, L, width) or (batch, width); nodes feeding only those are left out.
        """
        return self._evaluate(features, self.space.targets if names is None else tuple(names),
                              given)

    def tower(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """A cross-modal space's codes tanh(...) of one modality's items (``space.towers``),
        from that modality's input alone (B, bits)."""
        node = self.space.towers[modality]
        features = tuple(x if m == modality else None for m in self.space.modalities)
        return self._evaluate(features, (node,))[node]

    def absent(self, node: str) -> bool:
        """Whether ``node`` is zeros on the current path (it depends only on absent ops)."""
        return node in self.space.evaluation_plan(self._absent_cells(), (node,))[0]

    def _absent_cells(self, drawn: Mapping[str, Mapping] | None = None) -> frozenset[str]:
        """Cells running only absent ops under ``drawn`` (per leader cell); without it, under
        the held draw or, outside one_draw(), under what a draw may run (a draw must not be
        spent on the question)."""
        if drawn is None:
            drawn = self._draw() if self._holding else {
                c: self._cell_weights(c, draw=False) for c in self.space.cells}
        return frozenset(c for c, ops in self._absent_ops.items()
                         if ops and ops.issuperset(drawn[self.space.leader(c)]))

    def _draw(self) -> dict[str, Mapping[str, torch.Tensor | float | None]]:
        """Per leader cell (a follower runs its leader's), the candidates it runs and their
        weights: one draw per forward pass, or the one draw held inside :meth:`one_draw`."""
        if self._held is None:
            self._pairs = {}
            drawn = {c: self._cell_weights(c) for c in self.space.cells}
            if not self._holding:
                return drawn
            self._held = drawn
        return self._held

    def _evaluate(self, features: tuple[torch.Tensor, ...], targets: tuple[str, ...],
                  given: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        mods = self.space.modalities
        if len(features) != len(mods):
            raise ValueError(f"expected {len(mods)} inputs ({', '.join(mods)}), got {len(features)}")
        given = given or {}
        ref = next(x for x in features if x is not None)   # a tower reads one modality
        batch = ref.shape[0]
        if self.anchors:
            features = tuple(torch.cat([x, getattr(self.bank, key(m)).to(x.dtype)])
                             for m, x in zip(mods, features))
        drawn = self._draw()
        weights = {node: drawn[self.space.leader(node)] for node in self._absent_ops}
        absent, needed = self.space.evaluation_plan(self._absent_cells(drawn), targets)
        out = {m: given[m] if m in given else self.inputs[m](x)
               for m, x in zip(mods, features) if x is not None or m in given}
        for node, role, ins in self._plan:
            if role == "input" or node not in needed:
                continue
            if node in given:
                out[node] = given[node]
                continue
            if role == "given":
                raise ValueError(f"node {node!r} is given with each training pass "
                                 f"(node_outputs(given=...)), and this pass has none")
            if node in absent:   # zeros of the node's shape: its first input's (B, L)
                t = self.space.type_of(node)
                lead = node
                while lead not in out and self.space.inputs_of(lead):
                    lead = self.space.inputs_of(lead)[0]
                shape = out[lead].shape[:2] if lead in out else ref.shape[:2]
                like = next((v for v in out.values() if v.is_floating_point()),
                            ref.new_zeros((), dtype=torch.get_default_dtype()))  # ids alone
                out[node] = like.new_zeros((*shape[:1 if t.pooled else 2], t.width))
                continue
            args = [out[i] for i in ins]
            if role == "fixed":
                out[node] = self.layers[key(node)](*args)
            else:
                out[node] = self.cells[key(node)](args, weights[node])
        if self.anchors:   # the anchors' rows stay inside: every output is the batch's
            out = {n: v[:batch] for n, v in out.items()}
        return out

    def _cell_weights(self, node: str, draw: bool = True) -> Mapping[str, torch.Tensor | float | None]:
        """The candidates a cell runs and their weights; a follower runs its leader's.

        A mixed network weighs its cells by its :meth:`set_policy`: every candidate with
        softmax(α/τ), or (``gumbel``) the one candidate of a straight-through Gumbel-softmax
        draw (GDAS, Dong & Yang 2019): only it runs, its weight is 1 in the forward pass and
        its gradient reaches every α through softmax((α + g)/τ); ``binary`` (ProxylessNAS's
        binary gates, its §3.2.1): two distinct candidates drawn from p = softmax(α), one of
        them active (drawn from p renormalised over the pair), weighted g + q − sg(q) with g
        the one-hot gate and q that renormalised p: the forward value is the active path's,
        the gradient reaching q_i is ⟨∂L/∂out, o_i(x)⟩ (its Eq. 4 restricted to the pair);
        ``single``: one candidate drawn from softmax(α), unweighted (no gradient to α).
        ``draw=False`` asks only which candidates may run (all of them, for a drawing cell)."""
        node = self.space.leader(node)
        if self._gates is not None:
            return self._gates[node]
        if self.mode == "mixed":
            cell = key(node)
            names, alpha = self.cells[cell].names, self.alpha[cell]
            if self.policy == "gumbel" and self.training:
                if not draw:
                    return dict.fromkeys(names)
                soft = torch.nn.functional.gumbel_softmax(alpha, tau=self.temperature)
                i = int(soft.argmax())
                return {names[i]: 1.0 - soft[i].detach() + soft[i]}
            if self.policy in ("binary", "single") and self.training:
                if not draw:
                    return dict.fromkeys(names)
                p = alpha.detach().softmax(0)
                # the draws and their order are those ProxylessNAS's strategy made by hand
                if self.policy == "single":
                    return {names[int(torch.multinomial(p, 1, replacement=False))]: None}
                pair = torch.multinomial(p, min(2, len(p)), replacement=False).tolist()
                q = alpha[pair].softmax(0)
                hard = torch.zeros_like(q)
                hard[int(torch.multinomial(q.detach(), 1))] = 1.0
                self._pairs[node] = (pair, alpha.detach()[pair].logsumexp(0))
                return {names[i]: g for i, g in zip(pair, hard + q - q.detach())}
            return dict(zip(names, (alpha / self.temperature).softmax(0).unbind(0)))
        return {self._path[node]: None}

    @torch.no_grad()
    def codes(self, *features: torch.Tensor) -> torch.Tensor:
        """Binary codes, int8 ±1 of shape (batch, bits)."""
        return binarize(self(*features))

    # ---------------------------------------------------------------- architecture
    @torch.no_grad()
    def set_input_stats(self, stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Standardise each modality's input with the training data's (mean, std)."""
        for m, (mean, std) in stats.items():
            self.inputs[m].set(mean, std)

    @torch.no_grad()
    def set_anchors(self, inputs: Sequence[torch.Tensor]) -> None:
        """The anchor bank: per modality (``space.modalities`` order) the raw inputs of the
        space's ``op_config.anchors`` training items, (m, 1, width) each (images)."""
        for m, x in zip(self.space.modalities, inputs, strict=True):
            buffer = getattr(self.bank, key(m))
            x = torch.as_tensor(x, dtype=buffer.dtype)
            if x.shape != buffer.shape:
                raise ValueError(f"anchors of {m!r}: expected shape {tuple(buffer.shape)}, got "
                                 f"{tuple(x.shape)}")
            buffer.copy_(x)

    def set_path(self, choices: Mapping[str, str] | None) -> None:
        """The candidate each cell runs from now on. A mixed network runs that one path until
        ``set_path(None)`` returns it to the softmax(α) mixture."""
        if self.mode == "fixed":
            raise RuntimeError("set_path needs a single-path or mixed network, this one is fixed")
        if choices is None:
            if self.mode != "mixed":
                raise RuntimeError("only a mixed network can leave its path for the mixture")
            self._gates = None
            return
        choices = self.space.validate(choices)
        if self.mode == "mixed":
            self._gates = {c: {name: None} for c, name in choices.items()}
        else:
            self._path = choices

    def set_policy(self, policy: str, temperature: float = 1.0) -> None:
        """How mixed cells weigh their candidates while training (see :meth:`_cell_weights`):
        ``softmax`` (softmax(α/τ), every candidate runs; DARTS, csp), ``gumbel`` (one
        straight-through Gumbel-softmax draw: one path per step, GDAS), ``binary``
        (ProxylessNAS's α step: two candidates run, one active) or ``single`` (one path
        drawn from softmax(α): ProxylessNAS's W step). The drawing policies draw once per
        leader cell and forward pass (or once inside :meth:`one_draw`); τ is for softmax and
        gumbel only. Evaluation always uses the softmax(α/τ) mixture."""
        if self.mode != "mixed":
            raise RuntimeError(f"set_policy needs a mixed network, this one is {self.mode}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if not temperature > 0 or (policy in ("binary", "single") and temperature != 1):
            raise ValueError(f"temperature must be > 0 (1 for {policy}), got {temperature}")
        self.policy, self.temperature = policy, float(temperature)

    @contextlib.contextmanager
    def one_draw(self) -> Iterator[None]:
        """Every forward pass inside runs the same draw (an objective that runs the network
        more than once per loss, two views say, then trains one sampled network per step), and
        :meth:`absent` answers for that draw."""
        self._holding, self._held = True, None
        try:
            yield
        finally:
            self._holding, self._held = False, None

    @property
    def holding(self) -> bool:
        """Whether a :meth:`one_draw` is in progress."""
        return self._holding

    def hold_draw(self) -> None:
        """Inside :meth:`one_draw`: make its draw now, from torch's global generator, if it
        is not made yet (a process of a distributed run draws before it runs its share of a
        batch on its own generator, :mod:`avsearch.distributed`)."""
        if not self._holding:
            raise RuntimeError("hold_draw needs one_draw()")
        self._draw()

    @torch.no_grad()
    def keep_drawn_mass(self) -> None:
        """After α's optimizer step, ProxylessNAS's rescaling (§3.2.1): each pair of the last
        binary draw is shifted by a common offset so that it keeps the probability mass it
        had when drawn; the unsampled candidates' α did not move, so their probabilities are
        unchanged too."""
        for cell, (pair, before) in self._pairs.items():
            alpha = self.alpha[key(cell)]
            alpha[pair] += before - alpha[pair].logsumexp(0)

    def set_gates(self, gates: Mapping[str, Mapping[str, torch.Tensor | float | None]] | None) -> None:
        """Mixed mode: per cell, the candidates to run and their weights, held until None
        returns to the policy (DARTS-PT's perturbation; ProxylessNAS's gates are the
        ``binary`` policy's draws)."""
        if self.mode != "mixed":
            raise RuntimeError(f"set_gates needs a mixed network, this one is {self.mode}")
        if gates is not None:
            for cell in self.space.cells:
                unknown = set(gates[cell]) - set(self.space.candidates(cell))
                if unknown:
                    raise ArchError(f"cell {cell!r}: unknown candidate(s) {sorted(unknown)}")
        self._gates = None if gates is None else {c: dict(gates[c]) for c in self.space.cells}

    def probabilities(self, temperature: float = 1.0) -> dict[str, dict[str, float]]:
        """Mixed mode: softmax(α / ``temperature``) per cell (Eq. 42 at 1; at
        ``self.temperature``, the weights the softmax and Gumbel policies mix with in eval)."""
        return {cell: dict(zip(self.cells[key(cell)].names,
                               (self.alpha[key(cell)].detach() / temperature).softmax(0).tolist()))
                for cell in self.space.cells}

    def derive(self) -> dict[str, str]:
        """Mixed mode: the argmax architecture (Eq. 43); ties go to the earlier candidate."""
        return {cell: max(p, key=p.get) for cell, p in self.probabilities().items()}

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.alpha.values())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.alpha.values()}
        return (p for p in self.parameters() if id(p) not in arch)

    def weight_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights W without α: what a derived network inherits."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("alpha.")}

    def inherit(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the weights this network shares with ``state`` (e.g. a supernet's W*).

        Every parameter of this network must be found: a derived network inherits all of its
        weights, so a missing key means the two networks come from different spaces.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ArchError(f"cannot inherit weights: {len(missing)} missing, e.g. {missing[0]!r}")
        self.load_state_dict({k: state[k] for k in own})


def compile_space(space: SearchSpace, mode: Mode = "mixed",
                  choices: Mapping[str, str] | None = None) -> Network:
    """Compile ``space`` into a network of the given mode (see the module docstring)."""
    return Network(space, mode, choices)
