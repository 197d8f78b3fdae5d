# %% [markdown]
# # NeuroSQL quickstart: train on the demo brain slices, generate, look
#
# Runs top to bottom as a script (`python tutorials/quickstart.py`) or cell by cell in an editor that
# understands `# %%` cells. On 2 CPU cores it takes a few minutes; set `NEUROSQL_QUICK=1` for a smoke run.
#
# What happens:
# 1. the embedded demo set (simulated subjects built from the MNI152 template, Kaggle OASIS layout) is built;
# 2. it is split by subject and loaded with clinical-style MONAI transforms;
# 3. a `ConvGenerator` is trained with `NeuroSQLTrainer`; every 2 epochs `QuantileAssignmentHandler`
#    re-assigns the latent codes (exact linear assignment on the L2 cost, the package default; the training loss
#    is SSIM+L1; `AssignmentSettings(cost="ssim_l1")` is the paper's assignment cost; momentum 0.7);
# 4. synthetic slices are sampled and written as NIfTI + PNG next to real slices.

# %%
import logging
import os
import sys
from pathlib import Path

import torch
from monai.data import CacheDataset

from monai_neurosql import LatentBank, SSIML1Loss, generate
from monai_neurosql.data import (
    assignment_loader,
    build_oasis_demo,
    oasis_kaggle_records,
    slice_transforms,
    subject_stratified_split,
    train_loader,
)
from monai_neurosql.engines import NeuroSQLTrainer
from monai_neurosql.handlers import QuantileAssignmentHandler
from monai_neurosql.networks import ConvGenerator, count_parameters
from monai_neurosql.synthetic import write_synthetic
from monai_neurosql.visualize import save_grid_png

QUICK = os.environ.get("NEUROSQL_QUICK") == "1"
WORK = Path(os.environ.get("NEUROSQL_WORKDIR", "quickstart_run"))
SIZE, LATENT, EPOCHS = (32, 8, 2) if QUICK else (64, 16, 30)
torch.manual_seed(0)
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")

# %% [markdown]
# ## 1. Data: the demo set in the Kaggle OASIS layout, split by subject

# %%
subjects = (3, 2, 2, 2) if QUICK else (16, 10, 8, 6)
root = build_oasis_demo(WORK / "demo_data", subjects_per_class=subjects, slices_per_subject=4 if QUICK else 8)
records = oasis_kaggle_records(root)
# every split needs a subject: the 9 subjects of the quick run call for wider validation/test fractions
split = subject_stratified_split(records, fractions=(0.5, 0.25, 0.25) if QUICK else (0.8, 0.1, 0.1), seed=0)
print({name: len(items) for name, items in split.items()}, "slices;",
      len({r["subject"] for r in records}), "subjects")

transform = slice_transforms(SIZE)  # load, grayscale, percentile scaling, foreground crop, resize + pad
train_ds = CacheDataset(split["training"], transform, progress=False)
print("one training image:", tuple(train_ds[0]["image"].shape), "index", train_ds[0]["index"])

# %% [markdown]
# ## 2. Model: one generator, a latent bank on a Sobol-Gaussian lattice, the trainer and the assignment handler

# %%
generator = ConvGenerator(spatial_dims=2, latent_size=LATENT, spatial_size=SIZE,
                          channels=(64, 32, 16) if QUICK else (256, 128, 64, 32))
bank = LatentBank.create(n=len(train_ds), d=LATENT, kind="sobol_gaussian", seed=0)
optimizer = torch.optim.AdamW(generator.parameters(), lr=2e-3, weight_decay=1e-4)
assignment = QuantileAssignmentHandler(assignment_loader(train_ds), every_n_epochs=2,
                                       settings={"method": "hungarian", "momentum": 0.7})
trainer = NeuroSQLTrainer(
    device="cuda" if torch.cuda.is_available() else "cpu", max_epochs=EPOCHS,
    train_data_loader=train_loader(train_ds, batch_size=32, seed=0), generator=generator, bank=bank,
    optimizer=optimizer, loss_function=SSIML1Loss(spatial_dims=2), train_handlers=[assignment], seed=0,
)
print(f"generator: {count_parameters(generator):,} parameters; no encoder, no discriminator")

# %%
trainer.run()
for step in assignment.history:
    print(f"epoch {int(step['epoch'])}: assignment cost {step['cost']:.3f}, {100 * step['moved']:.0f}% codes moved")

# %% [markdown]
# ## 3. Generate: sampled-z mode (z from the lattice's prior), seeded; NIfTI files and a PNG grid

# %%
out = write_synthetic(generator, 16, bank.lattice, WORK / "synthetic", seed=0, spacing=None, overwrite=True)
print("wrote", len(out["files"]), "NIfTI files and", out["grid"])
real = torch.stack([train_ds[i]["image"] for i in range(8)])
fake = generate(generator, 8, bank.lattice, seed=1)
side_by_side = save_grid_png(torch.cat([real, fake]), WORK / "real_top_synthetic_bottom.png", nrow=8, scale=3)
print("real (top row) vs synthetic (bottom row):", side_by_side)
