"""Does a deeper domain encoder (final map 4x4: its features see the layout) rank the phase-scrambled control and
the 128 px models differently? Trains 3 kinds x 2 depths on the d128 run's 1000 training images, scores the sets."""
import json
import sys
import time

import numpy as np
import torch

from monai_neurosql.metrics import (
    extract_features,
    kernel_distance,
    load_domain_encoder,
    save_domain_encoder,
    train_domain_encoder,
)
from monai_neurosql.metrics.controls import control_sets

torch.set_num_threads(1)
R = "runs/bench_demo128"  # the 128 px run (was /work/runs/s28/d128 here)
c = torch.load(f"{R}/tensor_cache/demo_ebbbc8e5e0c31f242fde.pt", weights_only=True)
train, ref, labels = c["train_images"].float(), c["reference_images"].float(), c["train_labels"]
sets = dict(control_sets(train, c["unseen_images"].float(), 504, seed=0))
extra = torch.load("runs/probe/ctrl_sets2.pt", weights_only=True)
for k in ("phase_scrambled_above_4", "phase_scrambled_above_8", "phase_scrambled_above_16"):
    sets[k] = extra[k]
for m in ("neurosql", "vae", "gan"):
    for s in (0, 1):
        sets[f"{m}_s{s}"] = torch.from_numpy(np.load(f"{R}/cells/demo_{m}_conv_16_{s}_default_uncond_epochs/samples.npz")["images"]).float()
kinds = sys.argv[1].split(",")
depths = {"3 stages (old)": (32, 64, 128), "5 stages": (32, 64, 128, 128, 128)}
out = {}
for kind in kinds:
    for dname, ch in depths.items():
        path = f"runs/probe/enc_{kind}_{len(ch)}.pt"
        if dname.startswith("3"):
            enc = load_domain_encoder(f"{R}/domain_encoder.pt" if kind == "contrastive" else f"{R}/domain_encoder_{kind}.pt")
        else:
            try:
                enc = load_domain_encoder(path)
            except FileNotFoundError:
                t = time.time()
                enc = train_domain_encoder(train, labels, kind=kind, channels=ch, epochs=15, seed=0)
                save_domain_encoder(enc, path)
                print(f"trained {kind} {dname} in {time.time() - t:.0f} s", flush=True)
        fr = extract_features(enc, ref)
        res = {k: kernel_distance(fr, extract_features(enc, x)) for k, x in sets.items()}
        out[f"{kind} {dname}"] = res
        print(f"\n### {kind}, {dname}\n", flush=True)
        for k, v in res.items():
            print(f"| {k} | {v['kid']:.2f} ± {v['kid_se']:.2f} |", flush=True)
with open(f"runs/probe/enc_probe_{'_'.join(kinds)}.json", "w") as f:
    json.dump(out, f)
