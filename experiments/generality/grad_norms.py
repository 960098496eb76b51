"""Per epoch, the median and largest norm of the weights' gradient before clipping (the
``grad_norm`` of ``history.jsonl``), with the training loss and validation mAP@100, for the
finetune stage and the temporal CNN baseline of each run folder given.

    python experiments/generality/grad_norms.py RUN_FOLDER...
"""
import json
import sys
from pathlib import Path

STAGES = ("finetune", "baseline-cnn")

for folder in map(Path, sys.argv[1:]):
    for line in (folder / "history.jsonl").open():
        record = json.loads(line)
        if record["stage"] not in STAGES or "grad_norm" not in record:
            continue
        norm = record["grad_norm"]
        print(f"{folder.name:28s} {record['stage']:13s} epoch {record['epoch']}  "
              f"loss {record['loss']:.3f}  val mAP@100 {record['val'].get('map@100', float('nan')):.4f}  "
              f"grad norm median {norm['median']:7.3f}  max {norm['max']:7.3f}  "
              f"max/median {norm['max'] / norm['median']:5.1f}")
