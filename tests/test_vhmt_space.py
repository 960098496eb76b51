"""The vhmt and tam spaces (VHMT, paper 001, Tables 3-4): counts, presets, layers, weight
sharing, the ``none`` teacher, downsampling lengths, export, drawing and a one-shot run."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import avsearch
from avsearch import SpaceError, compile_space
from avsearch.arch import Architecture
from avsearch.draw import space_to_dot
from avsearch.data import Dataset, Split, load_dataset, register_builtin
from avsearch.errors import AvsearchInputError
from avsearch.ops.downsample import DOWNSAMPLE_MODES
from avsearch.ops.ssm import MambaBlock
from avsearch.testing.helpers import class_mean_dataset, reference_test_metrics
from conftest import write_ssvh_folder
from avsearch.ops.tam import TAM_VARIANTS, FrameHashLayer, MambaMixer, TAMBlock
from avsearch.ops.vhmt import parse_teacher_encoder_op
from avsearch.supernet import key

TINY = dict(d=8, d_dec=6, bits=8, heads=2, d_state=4, modalities="visual:12")
NAMED = ("student.codes", "student.latent", "student.recon", "teacher.latent", "teacher.codes",
         "teacher.recon")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())   # shared tensors counted once


def shapes(outputs: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(outputs[k].shape) for k in NAMED}


def expected_shapes(batch: int, length: int, d: int = 8, bits: int = 8, width: int = 12):
    return {"student.codes": (batch, bits), "student.latent": (batch, length, d),
            "student.recon": (batch, length, width), "teacher.latent": (batch, length, d),
            "teacher.codes": (batch, bits), "teacher.recon": (batch, length, width)}


@pytest.fixture(scope="module")
def space():
    return avsearch.get_space("vhmt", **TINY)


# ---------------------------------------------------------------- declaration
def test_count_cells_and_candidates_by_hand():
    s = avsearch.get_space("vhmt")
    assert s.cells == ["student.encoder", "student.decoder", "teacher.encoder", "teacher.decoder"]
    teacher = [f"{e}/{m}" for e in ("4-2", "4-2-2", "8-4-2", "16-8-4-2") for m in DOWNSAMPLE_MODES]
    assert s.candidates("teacher.encoder") == (*teacher, "none")
    assert s.candidates("teacher.decoder") == ("TAM_1", "TAM_2")
    assert s.candidates("student.encoder") == ("Mamba_3", "Mamba_6", "Mamba_12", "Mamba_16")
    assert s.candidates("student.decoder") == ("Mamba_1", "Mamba_2")
    assert s.count() == (4 * 5 + 1) * 2 * 4 * 2 == 336
    smaller = avsearch.get_space("vhmt", schedules="4-2,8-4-2", downsampling="haar",
                                 student_depths="3,6")
    assert smaller.count() == (2 * 1 + 1) * 2 * 2 * 2
    assert parse_teacher_encoder_op("16-8-4-2/sym8") == ((16, 8, 4, 2), "sym8")
    assert avsearch.get_space("tam").count() == 5


def test_table3_presets():
    p = avsearch.get_space("vhmt").presets
    assert list(p) == [f"exp{i}" for i in range(1, 11)]
    row = lambda name: tuple(p[name][c] for c in ("teacher.encoder", "teacher.decoder",
                                                  "student.encoder", "student.decoder"))
    assert row("exp1") == ("4-2/haar", "TAM_1", "Mamba_3", "Mamba_1")
    assert row("exp3") == ("8-4-2/haar", "TAM_1", "Mamba_6", "Mamba_1")       # the paper's choice
    assert row("exp4") == ("8-4-2/haar", "TAM_2", "Mamba_12", "Mamba_2")
    assert row("exp5") == ("16-8-4-2/haar", "TAM_2", "Mamba_16", "Mamba_2")
    assert [row(f"exp{i}")[0] for i in (6, 7, 8, 9)] == [f"8-4-2/{m}" for m in
                                                         ("db4", "sym8", "maxpool", "avgpool")]
    assert row("exp10")[0] == "none" and row("exp10")[2:] == ("Mamba_6", "Mamba_1")
    # a narrowed space keeps only the presets it contains
    assert list(avsearch.get_space("vhmt", downsampling="haar").presets) == \
        ["exp1", "exp2", "exp3", "exp4", "exp5", "exp10"]


def test_tam_space_is_table4_with_one_variant_for_the_whole_teacher():
    s = avsearch.get_space("tam", **TINY)
    assert s.candidates("teacher.encoder") == TAM_VARIANTS
    assert s.followers == {"teacher.decoder": "teacher.encoder"}
    assert "teacher.decoder" not in s.cells
    assert [s.presets[f"exp{i}"]["teacher.encoder"] for i in range(1, 6)] == \
        ["MHA", "MHA+MLP", "MHA+KAN", "Mamba+TRE", "MHA+TRE"]
    assert s.presets["exp4"]["student.encoder"] == "Mamba_6"
    fixed = compile_space(s, "fixed", s.presets["exp4"])
    enc = fixed.cells["teacher__encoder"].ops["Mamba+TRE"]
    dec = fixed.cells["teacher__decoder"].ops["Mamba+TRE"]
    assert [len(stage) for stage in enc.stages] == [8, 4, 2] and len(dec.blocks) == 1
    assert all(isinstance(b.mixer, MambaMixer) for st in enc.stages for b in st)
    assert isinstance(dec.blocks[0].mixer, MambaMixer)
    mixed = compile_space(s, "mixed")
    assert set(mixed.alpha) == {key(c) for c in s.cells}       # the follower has no α
    assert list(mixed.cells["teacher__decoder"].ops) == list(TAM_VARIANTS)
    assert json.loads(json.dumps(s.describe()))["followers"] == {"teacher.decoder": "teacher.encoder"}


def test_tam_follower_runs_its_leaders_choice_and_inherits():
    s = avsearch.get_space("tam", **TINY)
    supernet = compile_space(s, "single-path").eval()
    x = torch.randn(2, 9, 12)
    for preset in ("exp2", "exp5"):
        derived = compile_space(s, "fixed", s.presets[preset]).eval()
        derived.inherit(supernet.weight_state_dict())
        supernet.set_path(s.presets[preset])
        torch.testing.assert_close(derived.node_outputs(x)["teacher.recon"],
                                   supernet.node_outputs(x)["teacher.recon"])
    # in a mixed network the follower mixes with its leader's softmax(α)
    mixed = compile_space(s, "mixed")
    weights = mixed._cell_weights("teacher.decoder")
    assert list(weights) == list(TAM_VARIANTS)
    torch.testing.assert_close(torch.stack(list(weights.values())),
                               mixed.alpha["teacher__encoder"].softmax(0))


@pytest.mark.parametrize("options, message", [
    (dict(modalities="visual:64,audio:40"), "takes one modality"),
    (dict(tam="MHA+FFN"), r"option tam=.MHA\+FFN. must be MHA, MHA\+MLP"),
    (dict(downsampling="haar,db2"), r"downsampling=\('haar', 'db2'\) must be distinct modes from haar"),
    (dict(d=10, heads=4), "heads=4 must divide d=10"),
    (dict(student_depths="3,3"), "must be distinct depths"),
    (dict(schedules="4-0"), "schedules=.*depths >= 1"),
])
def test_bad_options(options, message):
    with pytest.raises(SpaceError, match=message):
        avsearch.get_space("vhmt", **options)


def test_two_modality_data_is_refused_with_a_clear_message():
    from avsearch.run import prepare_space
    data = Dataset("av", "av", {"visual": 12, "audio": 10}, 5, 2, {})
    with pytest.raises(SpaceError, match="'vhmt' takes one modality .*'visual', 'audio'"):
        prepare_space("vhmt", {}, data, None)
    one = Dataset("v", "v", {"frames": 20}, 5, 2, {})
    assert prepare_space("vhmt", {}, one, 16).modalities == ["frames"]


# ---------------------------------------------------------------- derived networks
def test_derived_network_holds_exactly_its_layers(space):
    cfg = space.op_config
    lin = lambda i, o: i * o + o
    mamba, mamba_dec = n_params(MambaBlock(8, cfg)), n_params(MambaBlock(6, cfg))
    tam = n_params(TAMBlock(8, "MHA+TRE", cfg))
    pos, ln, fh = cfg.max_len * 8, 2 * 8, n_params(FrameHashLayer(8, 8))
    student = lambda es, ds: lin(12, 8) + es * mamba + ln + fh + lin(8, 6) + ds * mamba_dec + lin(6, 12)
    teacher = lambda et, dt: lin(12, 8) + pos + et * tam + ln + fh + lin(8, 8) + pos + dt * tam + lin(8, 12)
    for preset, es, ds, et, dt in [("exp3", 6, 1, 8 + 4 + 2, 1), ("exp1", 3, 1, 4 + 2, 1),
                                   ("exp5", 16, 2, 16 + 8 + 4 + 2, 2)]:
        net = compile_space(space, "fixed", space.presets[preset])
        assert n_params(net) == student(es, ds) + teacher(et, dt), preset
    net = compile_space(space, "fixed", space.presets["exp3"])
    enc = net.cells["teacher__encoder"].ops["8-4-2/haar"]
    assert [len(s) for s in enc.stages] == [8, 4, 2] and enc.down.mode == "haar"
    assert len(net.cells["student__encoder"].ops["Mamba_6"].blocks) == 6
    # no teacher: no teacher layers at all (not even its input projection)
    alone = compile_space(space, "fixed", space.presets["exp10"])
    assert n_params(alone) == student(6, 1)
    assert not any(k.startswith(("cells.teacher", "layers.teacher")) for k in alone.state_dict())


def test_depth_candidates_share_weights(space):
    for mode in ("single-path", "mixed"):
        net = compile_space(space, mode)
        student = net.cells["student__encoder"].ops
        for i in range(3):
            assert student["Mamba_3"].blocks[i] is student["Mamba_16"].blocks[i]
        assert n_params(net.cells["student__encoder"]) == 16 * n_params(MambaBlock(8, space.op_config))
        teacher = net.cells["teacher__encoder"].ops
        small, big = teacher["4-2/haar"], teacher["16-8-4-2/sym8"]
        assert small.pos is big.pos
        assert all(small.stages[s][j] is big.stages[s][j] for s, e in enumerate((4, 2)) for j in range(e))
        assert teacher["8-4-2/db4"].stages[2][1] is big.stages[2][1]
        tam = n_params(TAMBlock(8, "MHA+TRE", space.op_config))
        assert n_params(net.cells["teacher__encoder"]) == 8 * 512 + (16 + 8 + 4 + 2) * tam
        dec = net.cells["teacher__decoder"].ops
        assert dec["TAM_1"].blocks[0] is dec["TAM_2"].blocks[0] and dec["TAM_1"].pos is dec["TAM_2"].pos


def test_derived_network_inherits_the_supernet_path(space):
    torch.manual_seed(0)
    supernet = compile_space(space, "single-path").eval()
    mixed = compile_space(space, "mixed").eval()
    mixed.load_state_dict(supernet.state_dict() | {k: v for k, v in mixed.state_dict().items()
                                                   if k.startswith("alpha.")})
    x = torch.randn(3, 25, 12)
    archs = [space.presets["exp1"], space.presets["exp10"], space.sample(random.Random(1))]
    for arch in archs:
        derived = compile_space(space, "fixed", arch).eval()
        derived.inherit(supernet.weight_state_dict())
        supernet.set_path(arch)
        mixed.set_path(arch)
        got, ref, ref_mixed = derived.node_outputs(x), supernet.node_outputs(x), mixed.node_outputs(x)
        assert got.keys() == ref.keys() == ref_mixed.keys()
        for k in got:
            torch.testing.assert_close(got[k], ref[k])
            torch.testing.assert_close(got[k], ref_mixed[k])
        torch.testing.assert_close(derived(x), got["student.codes"])
    # the depth-3 student's blocks are the first 3 of the depth-16 candidate, by value too
    derived = compile_space(space, "fixed", space.presets["exp1"])
    derived.inherit(supernet.weight_state_dict())
    deep = supernet.cells["student__encoder"].ops["Mamba_16"].blocks
    for i, block in enumerate(derived.cells["student__encoder"].ops["Mamba_3"].blocks):
        torch.testing.assert_close(block.in_proj.weight, deep[i].in_proj.weight)


# ---------------------------------------------------------------- named nodes
def test_named_nodes_have_their_shapes_with_and_without_teacher(space):
    x = torch.randn(2, 25, 12)
    for arch in (space.presets["exp3"], space.presets["exp10"]):
        out = compile_space(space, "fixed", arch).eval().node_outputs(x)
        assert shapes(out) == expected_shapes(2, 25)
        assert (out["student.codes"].abs() < 1).all()
    out = compile_space(space, "fixed", space.presets["exp10"]).node_outputs(x)
    for k in ("teacher.latent", "teacher.codes", "teacher.recon"):
        assert not out[k].any(), k
    assert space.inactive(space.presets["exp10"]) == {
        "teacher.embed": "unused", **{f"teacher.{n}": "absent" for n in (
            "encoder", "latent", "frame_codes", "codes", "dec_in", "decoder", "recon")}}
    assert space.inactive(space.presets["exp3"]) == {}
    assert space.auxiliary == ("student.latent", "student.recon", "teacher.latent",
                               "teacher.codes", "teacher.recon")


def test_none_adds_zeros_to_a_mixed_teacher():
    s = avsearch.get_space("vhmt", **TINY, schedules="4-2,8-4-2", downsampling="haar,maxpool")
    assert s.candidates("teacher.encoder") == ("4-2/haar", "4-2/maxpool", "8-4-2/haar",
                                               "8-4-2/maxpool", "none")
    torch.manual_seed(1)
    net = compile_space(s, "mixed").eval()
    with torch.no_grad():
        net.alpha["teacher__encoder"].copy_(torch.tensor([0.5, -1.0, 0.2, 0.0, 1.5]))
    x = torch.randn(2, 9, 12)
    out = net.node_outputs(x)
    assert shapes(out) == expected_shapes(2, 9)
    w = net.alpha["teacher__encoder"].softmax(0)
    total = 0
    for i, op in enumerate(s.candidates("teacher.encoder")[:-1]):
        net.set_path({**s.sample(0), "teacher.encoder": op})
        total = total + w[i] * net.node_outputs(x)["teacher.encoder"]
    torch.testing.assert_close(out["teacher.encoder"], total)     # none added zeros
    net.set_path({**s.sample(0), "teacher.encoder": "none"})        # none alone: zeros, no teacher
    alone = net.node_outputs(x)
    assert "teacher.encoder" not in alone and not alone["teacher.recon"].any()


@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
def test_downsampling_lengths_through_a_schedule(space, mode):
    net = compile_space(space, "fixed", {**space.presets["exp5"], "teacher.encoder": f"16-8-4-2/{mode}"})
    enc = net.cells["teacher__encoder"].ops[f"16-8-4-2/{mode}"]
    seen = []
    for stage in enc.stages:
        stage[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    for length, stages in ((25, [25, 13, 7, 4]), (30, [30, 15, 8, 4])):
        seen.clear()
        out = net.node_outputs(torch.randn(2, length, 12))
        assert seen == stages
        assert out["teacher.latent"].shape == (2, length, 8)   # back to T frames


# ---------------------------------------------------------------- export and drawing
def test_export_of_a_fixed_network(tmp_path):
    from avsearch.export import export_arch, load_program
    s = avsearch.get_space("vhmt", **TINY, student_depths="1,2")
    arch = Architecture.from_space(s, {"teacher.encoder": "8-4-2/haar", "teacher.decoder": "TAM_1",
                                       "student.encoder": "Mamba_2", "student.decoder": "Mamba_1"},
                                   provenance={"length": 9})
    torch.manual_seed(0)
    export_arch(arch, tmp_path / "vhmt.pt2")
    program = load_program(tmp_path / "vhmt.pt2")
    torch.manual_seed(0)
    net = arch.network()
    for batch, length in ((3, 9), (1, 25)):
        x = torch.randn(batch, length, 12)
        torch.testing.assert_close(program(x), net(x))


def test_drawings_group_teacher_and_student_and_show_choices(space):
    dot = space_to_dot(space)
    assert "subgraph cluster_teacher" in dot and "subgraph cluster_student" in dot
    assert "label=teacher " in dot and "teacher encoder" not in dot
    assert "8-4-2/ haar · db4 · sym8 · maxpool · avgpool" in dot and "Mamba_16" in dot
    none = space_to_dot(space, space.presets["exp10"])
    assert "(absent)" in none and "(unused)" in none and "style=\"rounded,dashed\"" in none
    arch = space_to_dot(space, space.presets["exp6"])
    assert "8-4-2/db4" in arch and "(absent)" not in arch
    tam = avsearch.get_space("tam")
    assert "follows teacher.encoder" in space_to_dot(tam, tam.presets["exp4"])


# ---------------------------------------------------------------- a one-shot search
def _tiny_frames() -> Dataset:
    """One modality whose frames carry their class: enough for the supervised smoke run."""
    return class_mean_dataset("vhmt-frames", {"visual": 12},
                              {"train": 48, "val": 16, "test": 16, "retrieval": 32}, length=9)


register_builtin("vhmt-frames", _tiny_frames)


def test_spos_smoke_run_end_to_end(tmp_path):
    from avsearch.run import RunSettings, run
    sets = {"d": "8", "d_dec": "8", "bits": "8", "heads": "2", "d_state": "4"}
    summary = run(RunSettings(space="vhmt", strategy="spos", data="vhmt-frames", budget="smoke",
                              epochs=1, space_options=sets, baselines=False), out=tmp_path, progress=False)
    arch = Architecture.load(tmp_path / "best.arch")
    space = arch.build_space()
    assert arch.space == "vhmt" and space.validate(arch.choices) == arch.choices
    assert arch.arch_id == space.arch_id(arch.choices) == summary["arch_id"]
    expected = reference_test_metrics(tmp_path / "best.arch", load_dataset("vhmt-frames"))
    assert summary["test"]["map@5"] == pytest.approx(expected["map@5"], abs=1e-9)
    net = arch.network()
    out = net.node_outputs(torch.randn(2, 9, 12))
    assert shapes(out) == expected_shapes(2, 9, bits=8)
    assert (tmp_path / "best.svg").exists()


def _unlabelled_frames() -> Dataset:
    """The same frames with no training labels: a self-supervised objective must not need them."""
    data = _tiny_frames()
    train = data.splits["train"]
    data.splits["train"] = Split(train.ids, np.zeros_like(train.labels), train.features)
    return Dataset("vhmt-unlabelled", "vhmt-unlabelled", data.modalities, data.length,
                   data.num_class, data.splits)


register_builtin("vhmt-unlabelled", _unlabelled_frames)


def test_vhmt_objective_trains_teacher_and_student_without_labels(tmp_path):
    """Eq. 18 reaches both branches (the supervised loss would reach the student only)."""
    from avsearch.inference import feature_encoder
    from avsearch.objectives import get_objective

    space = avsearch.get_space("vhmt", d=8, d_dec=8, bits=8, heads=2, d_state=4,
                               modalities={"visual": 12})
    net = compile_space(space, "fixed", space.presets["exp3"])
    data = _unlabelled_frames()
    objective = get_objective("vhmt", seed=0)
    batch = next(iter(objective.batches(data.split("train"), 1, 16)))
    loss = objective.loss(feature_encoder(net, data.split("train"), torch.device("cpu")), batch)
    loss.backward()
    for branch in ("teacher.encoder", "student.encoder", "teacher.decoder", "student.decoder"):
        grads = [p.grad for p in net.cells[branch.replace(".", "__")].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), branch


def test_exp10_student_alone_contrasts_two_masked_views_of_each_video():
    """Exp. X is a Siamese student: with the ``none`` teacher the contrastive pair is two
    views of each video (each dropping drop_ratio of its frames) through the student, not
    the student's code against the zeros of an absent teacher."""
    from avsearch.inference import feature_encoder
    from avsearch.losses.vhmt import debiased_contrastive
    from avsearch.objectives import VHMT

    space = avsearch.get_space("vhmt", d=8, d_dec=8, bits=8, heads=2, d_state=4, dropout=0.0,
                               drop_ratio=0.5, modalities={"visual": 12})
    net = compile_space(space, "fixed", space.presets["exp10"]).train()
    data = _unlabelled_frames()
    encode = feature_encoder(net, data.split("train"), torch.device("cpu"))
    batch = np.arange(10)
    objective = VHMT(seed=0, alpha=0.0, beta=1.0, gamma=0.0)     # the contrastive term alone
    torch.manual_seed(7)
    loss = objective.loss(encode, batch)

    torch.manual_seed(7)                                          # the same two draws
    x = encode.nodes(batch, ["visual"])["visual"]
    codes = []
    for _ in range(2):
        dropped = torch.rand(x.shape[:2]).topk(round(0.5 * 9), dim=1).indices   # 9 frames
        keep = torch.ones(x.shape[:2]).scatter_(1, dropped, 0.0).unsqueeze(-1)
        codes.append(encode.nodes(batch, ["codes"], given={"visual": x * keep})["codes"])
    assert not torch.equal(codes[0], codes[1])
    expected = debiased_contrastive(codes[0], codes[1], tau=0.5, rho=0.1, symmetric=True)
    torch.testing.assert_close(loss, expected)
    degenerate = debiased_contrastive(codes[0], torch.zeros_like(codes[0]), tau=0.5, rho=0.1)
    assert not torch.isclose(loss, degenerate)


def test_vhmt_objective_end_to_end_on_unlabelled_training_data(tmp_path):
    from avsearch.run import RunSettings, run

    sets = {"d": "8", "d_dec": "8", "bits": "8", "heads": "2", "d_state": "4"}
    summary = run(RunSettings(space="vhmt", strategy="random", data="vhmt-unlabelled",
                              objective="vhmt", budget="smoke", epochs=1, space_options=sets),
                  out=tmp_path, progress=False)
    assert set(summary["baselines"]) == {"LSH", "ITQ", "CNN"}   # the CNN trains with VHMT's loss
    expected = reference_test_metrics(tmp_path / "best.arch", load_dataset("vhmt-unlabelled"))
    assert summary["test"]["gmap"] == pytest.approx(expected["gmap"], abs=1e-9)
    assert summary["test"]["map@5"] == pytest.approx(expected["map@5"], abs=1e-9)
    with pytest.raises(AvsearchInputError, match="no labels"):
        run(RunSettings(space="vhmt", strategy="random", data="vhmt-unlabelled",
                        budget="smoke", epochs=1, space_options=sets), out=tmp_path / "sup", progress=False)
    assert not (tmp_path / "sup").exists()


def test_ssvh_folder_end_to_end_search_export_eval(tmp_path):
    """`avsearch run --space vhmt --objective vhmt --data <SSVH folder>`, then export:
    the self-supervised search never needs the (absent) training labels; metrics include GmAP."""
    from avsearch.cli import main
    from avsearch.export import export_arch, load_program

    data = tmp_path / "activitynet"
    write_ssvh_folder(data)
    out = tmp_path / "run"
    sets = [x for kv in ("d=8", "d_dec=8", "bits=8", "heads=2", "d_state=4") for x in ("--set", kv)]
    assert main(["run", "--space", "vhmt", "--strategy", "enas", "--objective", "vhmt", "--data",
                 str(data), "--budget", "smoke", "--out", str(out), "--quiet", *sets]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "MLP" not in metrics["baselines"]
    expected = reference_test_metrics(out / "best.arch", load_dataset(data))
    assert metrics["test"]["gmap"] == pytest.approx(expected["gmap"], abs=1e-9)
    arch = Architecture.load(out / "best.arch")
    program = load_program(export_arch(arch, tmp_path / "best.pt2"))
    x = torch.randn(3, 6, 12)
    torch.testing.assert_close(program(x), arch.network().eval()(x))
