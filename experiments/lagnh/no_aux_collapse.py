"""Why ``no_aux`` collapses for some seeds (issue 15 item 2b): train the preset through the
run's own training stage (``Trainer.stage``, the one training step, the lagnh objective and
its discriminator) and after every epoch record what the codes look like.

Per epoch, on the validation split's codes (sign of Z, in eval mode): distinct codes, the
fraction of bits that are the same for every item, the mean |bit mean| (0: balanced bits,
1: constant), the validation MAP@1000 against the retrieval set; and, on the training
batch the loss last saw, L_quan, the generator's L_GAN and how often the discriminator
calls Z real and a draw from the prior N(0, I) real.

    python experiments/lagnh/no_aux_collapse.py [--data fashion4|tiny] [--seeds 0,1,2]
        [--epochs 6] [--preset no_aux] [--objective-set gan=0 ...]

``tiny`` is the tagged image set of the tests (``avsearch.testing.helpers.DATA_IMG``),
where the collapse was first seen.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from avsearch.cli import parse_ints
from avsearch.data import load_dataset
from avsearch.inference import anchor_inputs, encode_split, resolve_device
from avsearch.losses.lagnh import generator_loss, quantization_loss
from avsearch.metrics import protocol_for, retrieval_metrics
from avsearch.objectives import get_objective
from avsearch.recipe import get_recipe
from avsearch.run import _seed_everything, prepare_space
from avsearch.spaces.lagnh import ADVERSARY
from avsearch.strategies import RunContext
from avsearch.train import Trainer, get_budget


def code_stats(codes: np.ndarray) -> dict[str, float]:
    """Distinct codes, constant bits and the mean |bit mean| of ±1 codes (n, bits)."""
    means = codes.astype(np.float64).mean(0)
    return {"distinct": int(len(np.unique(codes, axis=0))),
            "constant_bits": float(np.mean(np.abs(means) == 1)),
            "abs_bit_mean": float(np.abs(means).mean())}


def train(data_name: str, seed: int, epochs: int, preset: str, options: dict[str, str],
          bits: int, budget: str) -> list[dict]:
    data = load_dataset(data_name)
    objective = get_objective("lagnh", seed=seed, **options)
    space = prepare_space("lagnh", {}, data, bits, objective)
    anchors = anchor_inputs(space, data.split("train"), seed)
    device = resolve_device("cpu")
    protocol = protocol_for(data.images)
    val, db = data.split("val"), data.split("retrieval")
    _seed_everything(seed)
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(data, objective, get_budget(budget, epochs), device, Path(out),
                          progress=False, seed=seed, recipe=get_recipe("default"))
        ctx = RunContext(space, trainer, device, seed, data.split("train").moments(),
                         anchors=anchors)
        net = ctx.network("fixed", space.presets[preset])
        batch = np.arange(min(trainer.batch_size, len(data.split("train"))))

        def after_epoch(epoch: int) -> dict:
            net.eval()
            with torch.no_grad():
                q, d = encode_split(net, val, device), encode_split(net, db, device)
                m = retrieval_metrics(q, val.labels, d, db.labels, ks=(1000,), pr_curve=False,
                                      normalisation=protocol.normalisation)
                rec = {"seed": seed, "epoch": epoch, **code_stats(q), "val_map@1000": m["map"][1000]}
                out_nodes = trainer.replicas.encoder(net, trainer.train_split, device) \
                    .nodes(batch, ("codes", ADVERSARY))
                z = out_nodes["codes"]
                rec["L_quan"] = float(quantization_loss(z))
                disc = objective._disc
                if disc is not None and not net.absent(ADVERSARY):
                    fake = disc(out_nodes[ADVERSARY][:, 0])
                    real = disc(torch.randn_like(z))
                    rec["L_gan_generator"] = float(generator_loss(fake))
                    rec["D_says_Z_real"] = float((fake > 0).float().mean())
                    rec["D_says_prior_real"] = float((real > 0).float().mean())
                rec["|Z| mean"] = float(z.abs().mean())
            records.append(rec)
            print(json.dumps(rec), flush=True)
            net.train()
            return {}

        opt = trainer.weight_optimizer(net.parameters())
        after_epoch(0)
        trainer.stage("finetune", net, {"w": opt}, epochs, phase="finetune",
                      after_epoch=after_epoch)
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--budget", default="quick")
    p.add_argument("--preset", default="no_aux")
    p.add_argument("--objective-set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    if args.data == "tiny":
        from avsearch.testing.helpers import DATA_IMG
        args.data = DATA_IMG
    options = dict(kv.split("=", 1) for kv in args.objective_set)
    for seed in parse_ints(args.seeds, "--seeds"):
        train(args.data, seed, args.epochs, args.preset, options, args.bits, args.budget)


if __name__ == "__main__":
    main()
