"""Driver for tests/test_mini.py::test_training_runs_on_two_processes (started by torchrun).

Runs mini-sd's whole training (three stages and the export) on the tiny architecture, records
which example indices each process drew and whether it exported, into <work>/rank<r>.json.
"""

import json
import os
import sys
from pathlib import Path

import mini_sd.train as T

out, work = Path(sys.argv[1]), Path(sys.argv[2])
rank = int(os.environ["RANK"])
drawn, exports = [], []
draw, export = T.draw_batch, T.export


def recording_draw(*args, **kwargs):
    idx = draw(*args, **kwargs)
    drawn.append(idx.tolist())
    return idx


def recording_export(*args, **kwargs):
    exports.append(rank)
    return export(*args, **kwargs)


T.draw_batch, T.export = recording_draw, recording_export
cfg = T.Config(arch="tiny", n_images=32, n_photo_crops=0, clip_steps=2, clip_batch=8,
               vae_steps=2, vae_batch=4, vae_full_size_steps=0, unet_steps=2, unet_batch=4)  # fmt: skip
T.run(cfg, out, work)
(work / f"rank{rank}.json").write_text(json.dumps({"drawn": drawn, "exports": exports}))
