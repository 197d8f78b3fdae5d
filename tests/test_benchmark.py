from __future__ import annotations

import csv

import pytest

from monai_neurosql import benchmark
from tests.data.test_medmnist import write_npz


@pytest.mark.slow
def test_benchmark_runs_end_to_end_and_resumes(tmp_path):
    npz = write_npz(tmp_path / "tiny.npz", shape=(16, 16), n=(40, 8, 24))
    args = ["--dataset", str(npz), "--models", "neurosql", "vae", "--latent-sizes", "2", "--seeds", "0", "1",
            "--epochs", "1", "--batch-size", "16", "--num-samples", "64", "--output", str(tmp_path / "out"),
            "--threads", "1"]
    rows = benchmark.main(args)
    assert len(rows) == 4
    with open(tmp_path / "out" / "results.csv") as f:
        written = list(csv.DictReader(f))
    assert {r["model"] for r in written} == {"neurosql", "vae"}
    assert all(float(r["proxy_fid"]) >= 0 and 0 <= float(r["recall"]) <= 1 for r in written)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| neurosql | conv | 2 | default |" in table and "±" in table
    assert "24 generated vs 24 held-out real" in table  # matched counts: no more samples than real test images
    assert list((tmp_path / "out").glob("comparison_*.png"))
    # a second call finds every cell done and runs nothing new
    assert len(benchmark.main(args)) == 4
    with open(tmp_path / "out" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_comparison_grids_show_ddpm_beside_every_latent_size(tmp_path, monkeypatch):
    import torch

    from monai_neurosql import visualize

    saved = {}
    monkeypatch.setattr(visualize, "save_grid_png", lambda images, path, **kw: saved.__setitem__(path.name, images))
    rows = []
    for model, latent in (("neurosql", 4), ("neurosql", 16), ("vae", 16), ("ddpm", 4)):
        grid = tmp_path / f"{model}_{latent}.png"
        torch.save(torch.full((16, 1, 8, 8), float(len(rows))), grid.with_suffix(".pt"))
        rows.append({"dataset": "d", "backbone": "conv", "latent_size": str(latent), "conditional": "False",
                     "variant": "default", "seed": "0", "model": model, "grid": str(grid)})
    benchmark._comparisons(rows, {"reference_images": torch.zeros(20, 1, 8, 8)}, tmp_path)
    z4, z16 = saved["comparison_d_conv_z4_uncond.png"], saved["comparison_d_conv_z16_uncond.png"]
    assert z4.shape[0] == 3 * 16 and z16.shape[0] == 4 * 16  # real row + one row per model
    assert torch.equal(z16[-16:], torch.full((16, 1, 8, 8), 3.0))  # the DDPM row, last as in MODELS


def test_summary_has_the_classifier_columns_of_table_2_when_run():
    base = {"dataset": "d", "model": "neurosql", "backbone": "conv", "latent_size": "16", "variant": "default",
            "conditional": "True", "params": "10", "proxy_fid": "0.5", "sec_per_epoch": "1.0"}
    rows = [{**base, "seed": str(s), "clf_accuracy": str(0.8 + s / 10), "clf_macro_precision": "0.7",
             "clf_macro_recall": "0.6", "real_only_accuracy": "0.85", "real_plus_synthetic_accuracy": "0.86"}
            for s in (0, 1)]
    table = benchmark.summarize(rows)
    header, _, line = table.splitlines()
    assert "clf macro prec ↑" in header and "real+synthetic acc ↑" in header
    assert "| 2 | 10 |" in line and "0.85 ± 0.071" in line  # accuracy mean ± std over the two seeds
    assert "clf" not in benchmark.summarize([{**base, "seed": "0"}])  # absent when no classifier ran
