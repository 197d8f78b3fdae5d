"""64 px: a 4-stage autoencoder encoder (last map 4 x 4) trained like the run's, scoring the d64 run's controls and cells."""
import glob
import os
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
R = "runs/ddpm_demo64"  # the 64 px run (was /work/runs/s26/d64 here, with d64a, d64b beside it)
c = torch.load(glob.glob(f"{R}/tensor_cache/*.pt")[0], weights_only=True)
train, ref = c["train_images"].float(), c["reference_images"].float()
sets = {f"control:{k}": v for k, v in control_sets(train, c["unseen_images"].float(), len(ref), seed=0).items()}
for d in (R, R + "a", R + "b"):
    for f in sorted(glob.glob(f"{d}/cells/*/samples.npz")):
        name = os.path.basename(os.path.dirname(f))
        sets.setdefault(name, torch.from_numpy(np.load(f)["images"][: len(ref)]).float())
path = "runs/probe/enc64_autoencoder_4.pt"
if os.path.exists(path):
    enc = load_domain_encoder(path)
else:
    t = time.time()
    enc = train_domain_encoder(train, c["train_labels"], kind="autoencoder", channels=(32, 64, 128, 128), epochs=15, seed=0)
    save_domain_encoder(enc, path)
    print(f"trained autoencoder 4 stages in {time.time() - t:.0f} s", flush=True)
fr = extract_features(enc, ref)
print("\n| set | KID autoencoder, 4 stages |\n|---|---:|")
for k, x in sets.items():
    r = kernel_distance(fr, extract_features(enc, x))
    print(f"| {k} | {r['kid']:.3g} ± {r['kid_se']:.2g} |", flush=True)
