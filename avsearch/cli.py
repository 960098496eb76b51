"""The ``avsearch`` command line (docs/architecture.md, "The command line").

The library speaks Python: its settings and errors name parameters (``epochs``,
``strategy_options``). This module speaks the command line: it reads flags into those
settings (``parse_pairs``, ``parse_names``, ``parse_ints``), writes the command that
reproduces a comparison, and says an error's flag (:data:`FLAGS`).

Exit codes: 0 success, 2 bad input (a one-line message, no traceback), 1 anything else.
``AVSEARCH_DEBUG=1`` shows the traceback of a bad-input error too.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from avsearch.errors import AvsearchInputError, ReplicaLost

if TYPE_CHECKING:
    from avsearch.compare import CompareSettings

__all__ = ["main", "build_parser", "FLAGS", "parse_pairs", "parse_names", "parse_ints",
           "compare_command_line"]

# the flag of each library parameter an input error may name (AvsearchInputError.parameter)
FLAGS = {"space_options": "--set", "strategy_options": "--strategy-set",
         "recipe_options": "--recipe-set",
         "objective_options": "--objective-set", "objective": "--objective", "bits": "--bits",
         "epochs": "--epochs", "device": "--device", "precision": "--precision", "resume": "--resume", "out": "--out",
         "strategies": "--strategies", "random_archs": "--random-archs", "verdict": "--verdict",
         "references": "--references", "proxy_steps": "--proxy-steps", "seeds": "--seeds", "workers": "--jobs",
         "params": "--param", "codes": "--codes", "host": "--host", "port": "--port",
         "max_items": "--max-items", "max_k": "--max-k", "max_request_mb": "--max-request-mb",
         "storage": "--storage", "study": "--study", "artifacts": "--artifacts", "variant": "--variant"}


def in_flags(err: AvsearchInputError) -> str:
    """An input error's message as the command line says it: a message that begins with the
    parameter's name begins with its flag instead; any other says the flag at its end."""
    message, flag = str(err), FLAGS.get(getattr(err, "parameter", None))
    if flag is None:
        return message
    if message.startswith(err.parameter):
        return flag + message[len(err.parameter):]
    return f"{message} ({flag})"


# ---------------------------------------------------------------- reading flags
def parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """``["d=128", "e=2"]`` -> ``{"d": "128", "e": "2"}``; rejects malformed pairs."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AvsearchInputError(f"bad {flag} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def parse_names(text: str | None, flag: str) -> list[str] | None:
    """``"csp,darts"`` -> ``["csp", "darts"]``; ``""`` or ``"none"`` -> ``[]``; None -> None."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise AvsearchInputError(f"{flag} {text!r}: expected comma-separated names")
    return list(dict.fromkeys(names))


def parse_ints(text: str | None, flag: str, minimum: int | None = None) -> list[int] | None:
    """``"32,64"`` -> ``[32, 64]`` (None -> None); bad or repeated values are bad input."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise AvsearchInputError(f"{flag} {text!r}: expected comma-separated integers") from None
    if minimum is not None and any(v < minimum for v in values):
        raise AvsearchInputError(f"{flag} {text!r}: every value must be >= {minimum}")
    if len(set(values)) != len(values):
        raise AvsearchInputError(f"{flag} {text!r}: a value is repeated")
    return values


def compare_command_line(settings: CompareSettings, out: Path) -> str:
    """The ``avsearch compare`` command (every option explicit) that reproduces a comparison
    whose settings have every default resolved (what :func:`avsearch.compare.compare` passes)."""
    args = ["avsearch", "compare", "--space", settings.space,
            "--strategies", ",".join(settings.strategies) or "none",
            "--presets", ",".join(settings.presets) or "none",
            "--random-archs", str(settings.random_archs)]
    if settings.verdict:
        args += ["--verdict", "--references", str(settings.references),
                 "--proxy-steps", str(settings.proxy_steps)]
    args += ["--data", settings.data, "--recipe", settings.recipe]
    for key, value in settings.recipe_options.items():
        args += ["--recipe-set", f"{key}={value}"]
    if settings.objective is not None:
        args += ["--objective", settings.objective]
    for key, value in settings.objective_options.items():
        args += ["--objective-set", f"{key}={value}"]
    args += ["--budget", settings.budget]
    if settings.epochs is not None:
        args += ["--epochs", str(settings.epochs)]
    if any(b is not None for b in settings.bits):
        args += ["--bits", ",".join(str(b) for b in settings.bits)]
    args += ["--seeds", ",".join(map(str, settings.seeds)), "--device", settings.device]
    if settings.precision != "auto":
        args += ["--precision", settings.precision]
    for key, value in settings.space_options.items():
        args += ["--set", f"{key}={value}"]
    if settings.baselines:
        args.append("--baselines")
    args += ["--out", str(out)]
    return shlex.join(args)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage is one ``--help`` away)."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_space_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--space", required=required, metavar="NAME", help="a registered search space")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a space option, e.g. --set d=128 --set conv_kernels=3,4,5 (repeatable)")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="avdigits",
                   help="built-in data set name, AV-NAS JSON config, SSVH folder, or an .npz "
                        "from 'avsearch data build avdigits --variant'; append "
                        ":MODALITIES to keep some (avdigits:visual) or join them into one "
                        "(avdigits:visual+audio)")
    p.add_argument("--recipe", default="default", choices=("default", "paper"),
                   help="how networks train: default (supervised contrastive, AdamW, warm-up "
                        "and cosine decay) or paper (AV-NAS: InfoNCE 1+4, Adam, constant lr)")
    p.add_argument("--recipe-set", dest="recipe_sets", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="change a field of the recipe, e.g. --recipe-set lr=3e-3 (lr, "
                        "weight_decay, schedule, warmup, clip)")
    p.add_argument("--objective", default=None,
                   help="the loss: the recipe's by default (supcon; infonce for --recipe "
                        "paper), or self-supervised (labels unused): vhmt, autossvh")
    p.add_argument("--objective-set", dest="objective_sets", action="append", default=[],
                   metavar="KEY=VALUE", help="set an objective option, e.g. --objective-set "
                                             "beta=0.01 (options: 'avsearch objectives')")


def _space_from_args(name: str, sets: list[str]):
    from avsearch.spaces import get_space
    return get_space(name, **parse_pairs(sets, "--set"))


# ---------------------------------------------------------------- commands
def cmd_spaces(args: argparse.Namespace) -> int:
    from avsearch.spaces import list_spaces
    spaces = list_spaces()
    width = max(map(len, spaces), default=0)
    for name, summary in spaces.items():
        print(f"{name:<{width}}  {summary}")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from avsearch.spaces import space_options
    space = _space_from_args(args.name, args.sets)
    info = space.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"space {space.name}: {info['combinations']:,} architectures "
          f"({len(info['cells'])} cells)")
    print("options: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in info["config"].items()))
    name_w = max(len(c["name"]) for c in info["cells"])
    print(f"\n{'cell':<{name_w}}  kind  width  candidates")
    for c in info["cells"]:
        print(f"{c['name']:<{name_w}}  {c['kind']:<4}  {c['width']:>5}  {', '.join(c['candidates'])}")
    for preset, choices in info["presets"].items():
        print(f"\npreset {preset}: " + ", ".join(f"{k}={v}" for k, v in choices.items()))
    print("\nset options with --set KEY=VALUE:")
    for key, opt in space_options(args.name).items():
        print(f"  {key:<13} {opt.help}")
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from avsearch.arch import Architecture
    from avsearch.draw import render, space_to_dot
    if (args.arch is None) == (args.space is None):
        raise AvsearchInputError("draw takes either an .arch file or --space NAME (not both)")
    if args.arch is not None:
        if args.sets:
            raise AvsearchInputError("--set applies to --space; an .arch file carries its options")
        arch = Architecture.load(args.arch)
        dot = space_to_dot(arch.build_space(), arch.choices, arch.probabilities)
        output = Path(args.output) if args.output else Path(args.arch).with_suffix(".svg")
    else:
        space = _space_from_args(args.space, args.sets)
        dot = space_to_dot(space)
        output = Path(args.output) if args.output else Path(f"{space.name}.svg")
    render(dot, output)
    print(f"wrote {output}")
    return 0


def _print_listing(entries: dict[str, str], options) -> None:
    """One line per entry with its summary, then its options and their defaults."""
    width = max(map(len, entries), default=0)
    for name, summary in entries.items():
        print(f"{name:<{width}}  {summary}")
        opts = {k: o.default for k, o in options(name).items()}
        if opts:
            print(f"{'':<{width}}  options: " + ", ".join(
                f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in opts.items()))


def cmd_strategies(args: argparse.Namespace) -> int:
    from avsearch.strategies import list_strategies, strategy_options
    _print_listing(list_strategies(), strategy_options)
    return 0


def cmd_objectives(args: argparse.Namespace) -> int:
    from avsearch.objectives import list_objectives, objective_options
    _print_listing(list_objectives(), objective_options)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from avsearch.run import RunSettings, run, summary_table
    if args.free_threads and "OMP_NUM_THREADS" not in os.environ \
            and "WORLD_SIZE" not in os.environ:
        # on a shared machine, the cores other jobs leave free (never more than torch's default)
        import torch

        from avsearch._threads import free_cores
        if torch.get_num_threads() > 1:   # one thread cannot go lower: skip the 0.25 s sample
            torch.set_num_threads(min(torch.get_num_threads(), free_cores()))
    settings = RunSettings(space=args.space, strategy=args.strategy,
                           strategy_options=parse_pairs(args.strategy_sets, "--strategy-set"),
                           arch=args.arch, data=args.data, recipe=args.recipe,
                           objective=args.objective,
                           recipe_options=parse_pairs(args.recipe_sets, "--recipe-set"),
                           objective_options=parse_pairs(args.objective_sets, "--objective-set"),
                           bits=args.bits, budget=args.budget, epochs=args.epochs,
                           seed=args.seed, device=args.device, precision=args.precision,
                           space_options=parse_pairs(args.sets, "--set"),
                           baselines=not args.no_baselines)
    out = Path(args.out) if args.out else None
    summary = run(settings, out=out, resume=args.resume, progress=not args.quiet,
                  storage=args.storage, study=args.study, artifacts=args.artifacts)
    if "finalised_by" in summary:      # a worker of a shared study that does not finalise
        print(summary["message"])
        return 0
    if summary.get("rank", 0) == 0:    # under torchrun, rank 0 alone reports (and writes)
        print(summary_table(summary))
        print(f"wrote {summary['out']}/best.arch")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from avsearch.study import study_progress
    progress = study_progress(args.storage, args.study)
    if args.json:
        print(json.dumps(progress, indent=2))
        return 0
    t = progress["trials"]
    print(f"study {progress['study']}: {progress['tasks_done']} of {progress['tasks']} tasks done; "
          f"trials {t['complete']} complete, {t['running']} running, {t['waiting']} waiting, "
          f"{t['fail']} failed ({progress['retried']} retried), {t['pruned']} spare")
    for name, batch in progress["batches"].items():
        best = batch["best"]
        print(f"  {name}: {batch['done']} of {batch['tasks']} done" + (
            "" if best is None else
            f", best task {best['task']} {best['value']:.4f} (worker {best['worker']})"))
    if progress["finaliser"]:
        print(f"finalising worker: {progress['finaliser']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from avsearch.compare import CompareSettings, compare, markdown_table
    if args.references is not None and not args.verdict:
        raise AvsearchInputError("--references sets the references of --verdict; add --verdict")
    if args.proxy_steps is not None and not args.verdict:
        raise AvsearchInputError("--proxy-steps sets the ranking proxy of --verdict; add --verdict")
    settings = CompareSettings(
        space=args.space, strategies=parse_names(args.strategies, "--strategies"),
        presets=parse_names(args.presets, "--presets"), random_archs=args.random_archs,
        verdict=args.verdict, references=12 if args.references is None else args.references,
        proxy_steps=args.proxy_steps or 0,
        data=args.data, recipe=args.recipe,
        recipe_options=parse_pairs(args.recipe_sets, "--recipe-set"), objective=args.objective,
        objective_options=parse_pairs(args.objective_sets, "--objective-set"), budget=args.budget,
        epochs=args.epochs, bits=parse_ints(args.bits, "--bits", minimum=1),
        seeds=parse_ints(args.seeds, "--seeds"), device=args.device, precision=args.precision,
        space_options=parse_pairs(args.sets, "--set"), baselines=args.baselines)
    out = Path(args.out)
    result = compare(settings, out, progress=not args.quiet,
                     log=lambda line: print(line, flush=True), workers=args.jobs,
                     command=compare_command_line)
    print(markdown_table(result))
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from avsearch.arch import Architecture
    from avsearch.export import export_arch, export_towers, sidecar
    arch = Architecture.load(args.arch)
    arch.load_weights()  # check the weights before spending time on export
    output = Path(args.output) if args.output else Path(args.arch).with_suffix(".pt2")
    if arch.build_space().towers:   # cross-modal: one program per tower
        for modality, path in export_towers(arch, output).items():
            print(f"wrote {path} ({modality} tower) and its sha256 ({sidecar(path).name})")
        return 0
    export_arch(arch, output)
    print(f"wrote {output} and its sha256 ({sidecar(output).name}), which load_program checks")
    return 0


def _arch_and_data(args: argparse.Namespace):
    """The .arch's network and the data to run it on: ``--data``, else what the .arch's
    provenance names (said on stderr, since an .arch from elsewhere may name any path)."""
    from avsearch.arch import Architecture
    from avsearch.data import load_dataset
    from avsearch.inference import resolve_device
    from avsearch.run import check_inputs
    arch = Architecture.load(args.arch)
    net = arch.network()
    if args.data:
        spec, origin = args.data, "--data"
    else:
        spec = arch.provenance.get("data", "avdigits")
        if not isinstance(spec, str) or not spec:
            raise AvsearchInputError(f"{args.arch}: provenance.data is {spec!r}, not a data set; "
                                     f"pass --data")
        origin = f"{args.arch}'s provenance.data"
    try:
        data = load_dataset(spec)
    except AvsearchInputError as err:
        raise AvsearchInputError(f"{origin} names data {spec!r} that cannot be read: {err}"
                                 + ("" if args.data else "; pass --data")) from None
    print(f"avsearch: data {data.name!r} from {data.source} (named by {origin})", file=sys.stderr)
    check_inputs(arch.build_space(), data, f"{args.arch}: the architecture")
    device = resolve_device(args.device)
    return arch, net.to(device), data, device


def cmd_eval(args: argparse.Namespace) -> int:
    from avsearch.inference import evaluate
    from avsearch.metrics import PROTOCOLS
    if args.index_threshold < 0:
        raise AvsearchInputError(f"--index-threshold must be >= 0, got {args.index_threshold}")
    arch, net, data, device = _arch_and_data(args)
    metrics = evaluate(net, data, args.split, device, normalisation=args.normalisation,
                       pr_curve=args.json, index_threshold=args.index_threshold)
    if args.json:
        print(json.dumps({"arch": str(args.arch), "arch_id": arch.arch_id, "data": data.name,
                          "data_source": data.source,
                          "split": args.split, **metrics}, indent=2))
        return 0
    print(f"{arch.arch_id} on {data.name}: queries = {args.split} ({len(data.split(args.split))}), "
          f"database = {'val_database' if args.split == 'val' and 'val_database' in data.splits else 'retrieval'} "
          f"({len(data.database(args.split))}), {metrics['protocol']} protocol, mAP normalised "
          f"by {metrics['normalisation']}")
    for direction, numbers in metrics.get("directions", {}).items():   # cross-modal
        print(f"  {direction}: " + "   ".join(f"mAP@{k} {numbers[f'map@{k}']:.4f}"
                                            for k in PROTOCOLS[metrics["protocol"]].ks)
              + f"   mAP (whole database) {numbers['map@all']:.4f}   GmAP {numbers['gmap']:.4f}")
    if "directions" in metrics:
        print("  mean of the directions:")
    for k in PROTOCOLS[metrics["protocol"]].ks:
        print(f"  @{k:<4} mAP {metrics[f'map@{k}']:.4f}   P {metrics[f'p@{k}']:.4f}   "
              f"R {metrics[f'r@{k}']:.4f}")
    if "gmap" in metrics:
        print(f"  GmAP {metrics['gmap']:.4f}")
    curve = metrics.get("topk_precision")
    if curve:
        print("  topK precision: " + ", ".join(f"@{k} {p:.4f}" for k, p in
                                               zip(curve["k"], curve["precision"])))
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from avsearch._files import atomic_write
    from avsearch.inference import encode_split
    arch, net, data, device = _arch_and_data(args)
    split = data.split(args.split)
    towers = list(net.space.towers)
    if args.modality is not None and args.modality not in towers:
        raise AvsearchInputError(f"--modality {args.modality}: {args.arch} has "
                                 + (f"towers {', '.join(towers)}" if towers else
                                    "one output, not one per modality"))
    # a cross-modal network: each tower's codes (codes_<modality>), or one tower's as codes
    arrays = ({f"codes_{m}": encode_split(net, split, device, modality=m) for m in towers}
              if towers and args.modality is None else
              {"codes": encode_split(net, split, device, modality=args.modality)})
    buffer = io.BytesIO()
    # what made the codes, so that 'avsearch index build codes.npz' ties its index to them
    made_by = {key: np.asarray(value)
               for key, value in _codes_origin(arch, data, args.split).items()}
    if args.modality is not None:
        made_by["modality"] = np.asarray(args.modality)
    np.savez_compressed(buffer, **arrays, labels=split.labels, ids=np.asarray(split.ids),
                        **made_by)
    atomic_write(args.output, buffer.getvalue())
    for name, codes in arrays.items():
        print(f"wrote {args.output}: {name}, {codes.shape[0]} codes of {codes.shape[1]} bits "
              f"({args.split})")
    return 0


def _codes_origin(arch, data, split: str) -> dict[str, object]:
    """What an index sidecar (and an ``encode`` .npz) records of the codes' origin."""
    return {"arch_id": arch.arch_id, "weights_sha256": arch.weights_sha256 or "",
            "space": arch.space, "data": data.name, "data_source": str(data.source),
            "split": split, "steps": int(data.length)}


def _origin_parts(origin: dict) -> tuple[dict | None, dict | None]:
    """The sidecar's ``arch`` and ``data`` entries from :func:`_codes_origin`'s fields."""
    arch = ({k: origin.get(k) for k in ("arch_id", "weights_sha256", "space")}
            if origin.get("arch_id") else None)
    data = ({"name": origin["data"], "source": origin.get("data_source"),
             "split": origin.get("split"), "steps": origin.get("steps"),
             **({"modality": origin["modality"]} if origin.get("modality") else {})}
            if origin.get("data") else None)
    return arch, data


def _read_codes_npz(path: str) -> dict:
    """An .npz of codes (``avsearch encode``'s, or any with a ±1 ``codes`` array and
    optional ``ids``, ``labels`` and origin fields)."""
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except FileNotFoundError:
        raise AvsearchInputError(f"{path}: no such file") from None
    except (OSError, ValueError) as err:
        raise AvsearchInputError(f"{path}: not a readable .npz of codes ({err})") from None
    if "codes" not in arrays:
        raise AvsearchInputError(f"{path}: has no 'codes' array (has: "
                                 f"{', '.join(arrays) or 'nothing'})")
    origin = {key: arrays[key].item() for key in ("arch_id", "weights_sha256", "space", "data",
                                                   "data_source", "split", "steps", "modality")
              if key in arrays and arrays[key].ndim == 0}
    return {"codes": arrays["codes"], "ids": arrays.get("ids"), "labels": arrays.get("labels"),
            "origin": origin}


def cmd_index_build(args: argparse.Namespace) -> int:
    from avsearch.index import BinaryIndex, check_params
    from avsearch.inference import iter_codes
    params = check_params(parse_pairs(args.params, "--param"), args.kind)
    if args.source.endswith(".npz"):
        if args.data or args.split:
            raise AvsearchInputError("--data and --split choose what an .arch encodes; an .npz "
                                     "already holds codes")
        found = _read_codes_npz(args.source)
        arch, data = _origin_parts(found["origin"])
        labels = found["labels"]
        try:
            index = BinaryIndex.build(found["codes"], args.kind, params, ids=found["ids"],
                                      labels=labels if labels is not None and labels.ndim == 2
                                      else None, arch=arch, data=data)
        except AvsearchInputError as err:
            raise AvsearchInputError(f"{args.source}: {err}") from None
    else:
        args.arch = args.source
        args.split = args.split or "retrieval"
        arch_obj, net, dataset, device = _arch_and_data(args)
        split = dataset.split(args.split)
        arch, data = _origin_parts(_codes_origin(arch_obj, dataset, args.split))
        data["modalities"] = dict(dataset.modalities)
        towers = list(net.space.towers)
        if args.modality is not None and args.modality not in towers:
            raise AvsearchInputError(f"--modality {args.modality}: {args.source} has "
                                     + (f"towers {', '.join(towers)}" if towers else
                                        "one output, not one per modality"))
        # a cross-modal network: one tower's codes (default: the output's), recorded
        modality = args.modality or next((m for m, node in net.space.towers.items()
                                          if node == net.space.output_node), None)
        if modality is not None:
            data["modality"] = modality
        index = BinaryIndex.build(iter_codes(net, split, device, modality=modality), args.kind,
                                  params,
                                  ids=split.ids, labels=split.labels, arch=arch, data=data)
    index.save(args.output)
    print(f"wrote {args.output} and its sidecar {args.output}.json: {index.count} codes of "
          f"{index.bits} bits, {index.method()}")
    return 0


def _query_codes(args: argparse.Namespace, index):
    """The query codes and ids of ``index query``: encoded from --arch's data split, or read
    from --codes; either must come from the architecture the index was built for."""
    if (args.arch is None) == (args.codes is None):
        raise AvsearchInputError("index query takes either --arch (with --data/--split) or "
                                 "--codes FILE.npz")
    if args.arch is not None:
        from avsearch.arch import Architecture
        from avsearch.inference import encode_split
        index.check_arch(Architecture.load(args.arch), args.arch)
        arch, net, data, device = _arch_and_data(args)
        split = data.split(args.split or "test")
        return encode_split(net, split, device), list(split.ids)
    if args.data or args.split:
        raise AvsearchInputError("--data and --split choose what --arch encodes; --codes "
                                 "already holds codes")
    found = _read_codes_npz(args.codes)
    theirs = found["origin"].get("arch_id")
    if theirs and index.arch and theirs != index.arch.get("arch_id"):
        raise AvsearchInputError(f"{args.codes} holds codes of architecture {theirs}, "
                                 f"{args.index} was built for {index.arch['arch_id']}")
    codes = found["codes"]
    ids = found["ids"]
    return codes, [str(i) for i in (ids if ids is not None else range(len(codes)))]


def cmd_index_query(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from avsearch.arch import atomic_write
    from avsearch.index import BinaryIndex, check_params
    if args.k < 1 or (args.radius is not None and args.radius < 0):
        raise AvsearchInputError(f"-k must be at least 1 and --radius at least 0, got -k {args.k}"
                                 f"{'' if args.radius is None else f' --radius {args.radius}'}")
    index = BinaryIndex.load(args.index)
    query_params = check_params(parse_pairs(args.params, "--param"), index.kind, query=True)
    codes, query_ids = _query_codes(args, index)
    try:
        result = index.search(codes, args.k, radius=args.radius, **query_params)
    except AvsearchInputError as err:
        raise AvsearchInputError(f"{args.codes or args.arch}: {err}") from None
    found_ids = index.id_of(result.index)
    method = index.method(query_params)
    if args.output:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, query_ids=np.asarray(query_ids, dtype=str), ids=found_ids,
                            index=result.index, distance=result.distance,
                            exact=np.asarray(result.exact), search=np.asarray(method))
        atomic_write(args.output, buffer.getvalue())
    if args.json:
        print(json.dumps({
            "index": str(args.index), "search": method, "exact": result.exact, "k": args.k,
            "radius": args.radius, "bits": index.bits, "tie_break": "database index",
            "queries": [{"id": qid, "neighbours": [
                {"id": str(i), "index": int(j), "distance": int(d)}
                for i, j, d in zip(ids_row, idx_row, dist_row) if j >= 0]}
                for qid, ids_row, idx_row, dist_row in zip(query_ids, found_ids.tolist(),
                                                           result.index, result.distance)]},
            indent=1))
        return 0
    print(f"{args.index}: {index.count} codes of {index.bits} bits, {method}; "
          f"{len(query_ids)} queries, top {args.k}"
          + (f" within distance {args.radius}" if args.radius is not None else "")
          + ", ties by database index")
    if args.output:
        print(f"wrote {args.output} (query_ids, ids, index, distance; -1 / '' past the end)")
        return 0
    for qid, ids_row, dist_row in zip(query_ids[:10], found_ids[:10], result.distance[:10]):
        shown = [f"{i} ({d})" for i, d in zip(ids_row, dist_row) if d >= 0][:8]
        print(f"  {qid}: {', '.join(shown)}{' …' if (dist_row >= 0).sum() > 8 else ''}")
    if len(query_ids) > 10:
        print(f"  … {len(query_ids) - 10} more queries (--json or -o FILE.npz for all)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from avsearch.serve import is_loopback, serve
    if not is_loopback(args.host) and not args.token:
        raise AvsearchInputError(f"--host {args.host} is not loopback: anyone who can reach it "
                                 f"could search and add; give --token (or $AVSEARCH_TOKEN)")
    return serve(args)


def cmd_data_build(args: argparse.Namespace) -> int:
    """Build avdigits (or a variant), fashion4 or avclips and say what was written and how
    it compares."""
    import warnings

    from avsearch._files import sha256_file
    from avsearch.data import avdigits, avdigits_builder
    if args.name in SINGLE_FILE_DATA:
        return _build_single_file(args)
    if args.name != "avdigits":
        raise AvsearchInputError(f"no builder for data set {args.name!r} (available: "
                                 f"{', '.join(['avdigits', *SINGLE_FILE_DATA])})")
    out, seed, shape = Path(args.out), args.seed, avdigits.get_shape(args.variant)
    version = avdigits_builder.espeak_version()
    default = shape == avdigits.DEFAULT
    what = "avdigits" if default else f"avdigits variant {shape.name!r}"
    print(f"building {what} (seed {seed}) with espeak-ng {version} into {out}", flush=True)
    if not default:
        print(f"  {shape.num_class} classes, train/val/test {'/'.join(map(str, shape.sizes))} "
              f"videos, {shape.length} steps, widths "
              + ", ".join(f"{m} {w}" for m, w in shape.modalities.items()), flush=True)
    if version != avdigits.ESPEAK_VERSION:
        print(f"warning: the shipped file was built with espeak-ng {avdigits.ESPEAK_VERSION}; "
              f"with {version} the audio may differ", file=sys.stderr)
    existed = (out / shape.file_name).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the version warning is printed above
        path = avdigits_builder.build_avdigits(out, seed, shape=shape, progress=True)
    digest = sha256_file(path)
    print(f"{'replaced' if existed else 'wrote'} {path} ({path.stat().st_size / 1e6:.1f} MB, "
          f"sha256 {digest})")
    if seed == 0 and default:
        print("identical to the shipped file" if digest == avdigits.DATA_SHA256 else
              "differs from the shipped file (another espeak-ng, numpy or zlib?)")
    elif not default:
        print(f"use it with: avsearch run --data {path}")
    return 0


# the built-in data sets with one shipped file and no variants, and what can make a rebuild
# differ from it
SINGLE_FILE_DATA = {"fashion4": "another torch or CPU instruction set?",
                    "avclips": "other source files, numpy or zlib?"}


def _build_single_file(args: argparse.Namespace) -> int:
    """Build fashion4 or avclips and say what was written and whether it is the shipped file."""
    import importlib

    from avsearch._files import sha256_file
    name, out, seed = args.name, Path(args.out), args.seed
    data = importlib.import_module(f"avsearch.data.{name}")
    builder = importlib.import_module(f"avsearch.data.{name}_builder")
    if args.variant != "default":
        raise AvsearchInputError(f"{name} has no variants (got {args.variant!r})", "variant")
    print(f"building {name} (seed {seed}) into {out}", flush=True)
    if name == "fashion4":     # its CNN features are floats computed by torch
        differs = data.rebuild_differs()
        if differs:
            print(f"warning: {differs}, so floats may round differently", file=sys.stderr)
    existed = (out / f"{name}.npz").exists()
    path = getattr(builder, f"build_{name}")(out, seed, progress=True)
    digest = sha256_file(path)
    print(f"{'replaced' if existed else 'wrote'} {path} ({path.stat().st_size / 1e6:.1f} MB, "
          f"sha256 {digest})")
    if seed == 0:
        print("identical to the shipped file" if digest == data.DATA_SHA256 else
              f"differs from the shipped file ({SINGLE_FILE_DATA[name]})")
    else:
        print(f"use it with: avsearch run --data {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from avsearch import __version__
    from avsearch.data import SPLITS
    from avsearch.metrics import NORMALISATIONS
    parser = _Parser(prog="avsearch", description="Neural architecture search for video hashing.")
    parser.add_argument("--version", action="version", version=f"avsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("spaces", help="list the registered search spaces")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("space", help="describe a search space: cells, candidates, presets, count")
    p.add_argument("name", help="space name (see 'avsearch spaces')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a space option (repeatable)")
    p.set_defaults(func=cmd_space)

    p = sub.add_parser("draw", help="draw a space or an architecture (SVG/PNG/PDF/DOT)",
                       description="Draw every cell of a space with its candidates (--space), or "
                                   "the ops an .arch file chose, with softmax(α) as edge weights "
                                   "when it has them. The format follows -o's extension.")
    p.add_argument("arch", nargs="?", help="an .arch file")
    _add_space_options(p, required=False)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file: .svg (default), .png, .pdf or .dot (needs no Graphviz)")
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("strategies", help="list the registered search strategies")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("objectives", help="list the training objectives and their options")
    p.set_defaults(func=cmd_objectives)

    p = sub.add_parser("run", help="search, prune and finetune an architecture (or train a preset)",
                       description="Search a space with a strategy on a data set, finetune the "
                                   "derived network, evaluate it against LSH, ITQ and an MLP, and "
                                   "write best.arch, best.safetensors, metrics.json, history.jsonl, "
                                   "best.svg and alpha.png into --out.")
    _add_space_options(p, required=False)
    p.set_defaults(space="av_nas")
    p.add_argument("--strategy", default="csp", help="search strategy (see 'avsearch strategies')")
    p.add_argument("--strategy-set", dest="strategy_sets", action="append", default=[],
                   metavar="KEY=VALUE", help="set a strategy option, e.g. --strategy-set order=2 "
                                             "(options: 'avsearch strategies')")
    p.add_argument("--arch", metavar="PRESET|FILE.arch",
                   help="train this preset of the space or this .arch's architecture from scratch, no search")
    _add_data_options(p)
    p.add_argument("--bits", type=int, help="code length (default: the space's)")
    p.add_argument("--budget", default="quick", help="smoke, quick (default) or paper")
    p.add_argument("--epochs", type=int, help="epochs per stage (overrides the budget's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="training's arithmetic: auto (bf16 on CUDA, fp32 on a CPU), fp32, or "
                        "bf16 (on a CPU with AVX-512 BF16 or AMX: faster matmuls)")
    p.add_argument("--out", help="run folder (default runs/SPACE-STRATEGY-TIME)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the newest matching run)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the baselines (LSH, ITQ, MLP; a video-text space's CCA-LSH, CCA-ITQ)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--storage", metavar="URL",
                   help="share the search's trials with other runs through this Optuna storage: "
                        "postgresql://..., mysql://... or a journal file's path (with --study)")
    p.add_argument("--study", metavar="NAME", help="the Optuna study the runs share (with --storage)")
    p.add_argument("--artifacts", metavar="DIR",
                   help="folder every worker of --storage sees (a shared file system), through "
                        "which they pass weights (default: beside a journal file; a database "
                        "needs it)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("study", help="progress of a search shared through an Optuna storage",
                       description="Trials done, running, waiting and failed, the best so far "
                                   "and the finalising worker of a study that avsearch run "
                                   "--storage URL --study NAME workers share (Optuna's "
                                   "dashboard reads the same storage).")
    p.add_argument("storage", metavar="URL")
    p.add_argument("study", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("compare", help="run strategies, presets and random architectures alike "
                                       "and tabulate them (AV-NAS Table 2)",
                       description="Run every strategy, every preset and a few random "
                                   "architectures of a space on the same data, budget, code "
                                   "lengths and seeds, and write compare.md, compare.json and "
                                   "compare.png into --out: test mAP@K per code length, supernet "
                                   "time per epoch, search time, finetune time per epoch, "
                                   "inference time and parameters. Finished runs under "
                                   "--out/runs are kept, so the same command continues a "
                                   "comparison that stopped.")
    _add_space_options(p, required=False)
    p.set_defaults(space="av_nas")
    p.add_argument("--strategies", metavar="LIST",
                   help="comma-separated strategies (default: all registered; 'none' for none); "
                        "a variant with options is its own row: csp+halving=4+policy=gumbel")
    p.add_argument("--presets", metavar="LIST",
                   help="comma-separated presets of the space (default: all; 'none' for none)")
    p.add_argument("--random-archs", type=int, default=2, metavar="N",
                   help="random architectures trained from scratch (default 2)")
    p.add_argument("--verdict", action="store_true",
                   help="judge every strategy against random references: each strategy's "
                        "architecture also retrained from scratch, mean Δ to the references' "
                        "median with a bootstrap CI, percentile, Wilcoxon p, the noise floor "
                        "and Kendall τ of each supernet's ranking")
    p.add_argument("--references", type=int, metavar="N",
                   help="--verdict's random references, random-1 .. random-N (default 12, at "
                        "least 2)")
    p.add_argument("--proxy-steps", type=int, metavar="K",
                   help="--verdict's τ: score each reference by the validation mAP of its path "
                        "after K weight steps of its own from each search's shared weights, for "
                        "every strategy with a supernet (default 0: spos, enas under the shared "
                        "weights as they are, csp, darts, proxyless by softmax(α))")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at once in separate processes (at most the cores; "
                        "each gets cores/N torch threads)")
    _add_data_options(p)
    p.add_argument("--budget", default="quick", help="smoke, quick (default) or paper")
    p.add_argument("--epochs", type=int, help="epochs per stage (overrides the budget's)")
    p.add_argument("--bits", metavar="LIST", help="code lengths, e.g. 32,64 (default: the space's)")
    p.add_argument("--seeds", default="0", metavar="LIST",
                   help="seeds, e.g. 0,1,2 (default 0); more than one gives mean ± std")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="training's arithmetic: auto (bf16 on CUDA, fp32 on a CPU), fp32, or "
                        "bf16 (on a CPU with AVX-512 BF16 or AMX: faster matmuls)")
    p.add_argument("--out", required=True, help="comparison folder (runs/, compare.md/.json/.png)")
    p.add_argument("--baselines", action="store_true",
                   help="also LSH, ITQ and MLP, once per code length and seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="export an .arch with its weights to a .pt2 program")
    p.add_argument("arch", help="an .arch file with weights")
    p.add_argument("-o", "--output", metavar="FILE", help="output .pt2 (default: beside the .arch)")
    p.set_defaults(func=cmd_export)

    for name, text in (("eval", "retrieval metrics of an .arch on a split"),
                       ("encode", "binary codes of a split, as .npz (codes, labels, ids)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("arch", help="an .arch file with weights")
        p.add_argument("--data", help="data set (default: the one the .arch was trained on)")
        p.add_argument("--split", default="test", choices=SPLITS)
        p.add_argument("--device", default="auto")
        if name == "eval":
            from avsearch.inference import INDEX_THRESHOLD
            p.add_argument("--json", action="store_true", help="all metrics and the PR curve as JSON")
            p.add_argument("--index-threshold", type=int, default=INDEX_THRESHOLD, metavar="N",
                           help=f"rank databases of at least N items through faiss's flat "
                                f"binary index: the same ranking (ties by database index) and "
                                f"numbers, faster; not with --json, whose PR curve needs every "
                                f"pair (default {INDEX_THRESHOLD}; 0: never)")
            p.add_argument("--normalisation", choices=list(NORMALISATIONS),
                           help="mAP@K divides by K (SSVH papers; the default for videos), by the "
                                "relevant items retrieved (AV-NAS's and the image-hashing papers' "
                                "code; the default for images) or by min(K, relevant)")
            p.set_defaults(func=cmd_eval)
        else:
            p.add_argument("-o", "--output", required=True, metavar="FILE", help="output .npz")
            p.add_argument("--modality", metavar="NAME",
                           help="a cross-modal .arch: that tower's codes only, as 'codes' (for "
                                "'avsearch index build'); default: every tower's, as "
                                "codes_<modality>")
            p.set_defaults(func=cmd_encode)

    p = sub.add_parser("index", help="faiss binary indexes of codes: build and query")
    index_sub = p.add_subparsers(dest="index_command", metavar="COMMAND", parser_class=_Parser)
    index_sub.required = True
    from avsearch.index import KINDS
    kinds_help = "; ".join(f"{kind}: {', '.join(opts) or 'no parameters'}"
                           for kind, opts in KINDS.items())
    p = index_sub.add_parser(
        "build", help="build an index from an .arch (encoding a split) or from codes (.npz)",
        description="Encode a split with an .arch (streaming, one batch at a time) or read "
                    "codes from an .npz ('avsearch encode'), build a faiss binary index and "
                    "write it with a JSON sidecar (OUT.json) and the items' ids and labels "
                    "(OUT.meta.npz). flat and multihash search exactly; hash, ivf and hnsw are "
                    "approximate and say so.")
    p.add_argument("source", help="an .arch file with weights, or an .npz of codes")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the index file")
    p.add_argument("--kind", default="flat", choices=list(KINDS),
                   help="flat (exact, default), multihash (exact multi-index hashing), hash, "
                        "ivf, hnsw (approximate)")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help=f"a parameter of the kind (repeatable): {kinds_help}")
    p.add_argument("--data", help="data set to encode (default: the one the .arch was trained on)")
    p.add_argument("--split", choices=["train", "val", "test", "retrieval"],
                   help="split to encode (default retrieval)")
    p.add_argument("--modality", metavar="NAME",
                   help="a cross-modal .arch: index that tower's codes (default: the "
                        "output's, the video tower); the sidecar records it for serve")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_index_build)

    p = index_sub.add_parser(
        "query", help="top-k neighbours and Hamming distances from an index",
        description="Search an index with codes encoded by --arch (which must be the index's "
                    "architecture) or read from --codes; neighbours are ranked by (Hamming "
                    "distance, database index).")
    p.add_argument("index", help="an index file from 'avsearch index build'")
    p.add_argument("--arch", help="encode the queries with this .arch (the index's)")
    p.add_argument("--codes", metavar="FILE.npz", help="query codes ('avsearch encode' output)")
    p.add_argument("--data", help="data set of --arch's queries (default: the .arch's own)")
    p.add_argument("--split", choices=["train", "val", "test", "retrieval"],
                   help="split of --arch's queries (default test)")
    p.add_argument("-k", type=int, default=100, help="neighbours per query (default 100)")
    p.add_argument("--radius", type=int, help="only neighbours within this Hamming distance")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="a query parameter of an approximate kind: nflip (hash, multihash), "
                        "nprobe (ivf), efSearch (hnsw)")
    p.add_argument("--json", action="store_true", help="every query's neighbours as JSON")
    p.add_argument("-o", "--output", metavar="FILE.npz",
                   help="write query_ids, ids, index, distance (N_q, k) to an .npz")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_index_query)

    p = sub.add_parser("serve", help="an HTTP service: codes and neighbours of posted features",
                       description="Serve an .arch and its index over HTTP (FastAPI + uvicorn, "
                                   "the 'serve' extra): GET /health, GET /describe, POST /search "
                                   "and POST /add (features as JSON, or an .npy/.npz body). "
                                   "Binds to loopback unless told otherwise; binding elsewhere "
                                   "needs --token.")
    p.add_argument("arch", help="an .arch file with weights")
    p.add_argument("--index", required=True, action="append", metavar="INDEX",
                   help="its index ('avsearch index build'); a cross-modal .arch takes one per "
                        "tower (repeat --index), each built with --modality")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("AVSEARCH_TOKEN"),
                   help="require 'Authorization: Bearer TOKEN' (default: $AVSEARCH_TOKEN); "
                        "needed to bind to anything but loopback")
    p.add_argument("--max-items", type=int, default=256, help="items per request (default 256)")
    p.add_argument("--max-request-mb", type=float, default=32.0,
                   help="request body size limit in MB (default 32)")
    p.add_argument("--max-k", type=int, default=1000, help="largest k a request may ask")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("data", help="data set tools")
    data_sub = p.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    data_sub.required = True
    p = data_sub.add_parser("build", help="rebuild a built-in data set from its sources",
                            description="Rebuild avdigits (DIR/avdigits.npz) or fashion4 "
                                        "(DIR/fashion4.npz), or build an avdigits variant "
                                        "of another shape (DIR/avdigits-NAME.npz) to load with "
                                        "--data DIR/avdigits-NAME.npz; or rebuild "
                                        "avclips (DIR/avclips.npz).")
    p.add_argument("name", help="avdigits, fashion4 or avclips")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="default", metavar="NAME",
                   help="avdigits: default (the shipped data), v30, few or long (an unknown "
                        "name lists the variants); fashion4 has none")
    p.set_defaults(func=cmd_data_build)
    return parser


def main(argv: Sequence[str] | None = None, *, free_threads: bool = False) -> int:
    """The command line. ``free_threads``: a run takes the cores other processes leave free
    (:func:`console`, the ``avsearch`` program); a caller in Python keeps its own threads."""
    args = build_parser().parse_args(argv)
    args.free_threads = free_threads
    try:
        return args.func(args)
    except AvsearchInputError as err:
        if os.environ.get("AVSEARCH_DEBUG"):
            raise
        print(f"avsearch: error: {in_flags(err)}", file=sys.stderr)
        return 2
    except ReplicaLost as err:     # a process of a distributed run died: say so, no traceback
        if os.environ.get("AVSEARCH_DEBUG"):
            raise
        print(f"avsearch: error: {err}", file=sys.stderr)
        return 1


def console() -> int:
    """The ``avsearch`` program (``python -m avsearch``, the console script)."""
    from avsearch._threads import keep_freed_memory
    keep_freed_memory()
    return main(free_threads=True)


if __name__ == "__main__":
    sys.exit(console())
