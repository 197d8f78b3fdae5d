from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_neurosql import benchmark
from monai_neurosql.benchmark import cells, tables
from tests.data.test_medmnist import write_npz


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_benchmark_runs_end_to_end_keeps_everything_under_output_and_resumes(tmp_path, monkeypatch, capfd):
    data_dir = tmp_path / "elsewhere"
    data_dir.mkdir()
    npz = write_npz(data_dir / "tiny.npz", shape=(16, 16), n=(48, 40, 60))
    out = tmp_path / "out"
    args = ["--dataset", str(npz), "--models", "neurosql", "gan", "--latent-sizes", "2", "--seeds", "0",
            "--epochs", "1", "--batch-size", "16", "--num-samples", "60", "--output", str(out), "--threads", "1",
            "--encoder-epochs", "1", "--vae-betas", "0.005", "--audit-samples", "60"]
    rows = benchmark.main(args)
    assert {r["model"] for r in rows} == {"neurosql", "gan"} and all(r["protocol"] == "epochs" for r in rows)
    written = _read(out / "results.csv")
    assert len(written) == 2 and all(r["dataset"] == "tiny" for r in written)
    # below their minimum counts the metrics say so instead of giving a number
    assert all(r["domain_fid"].startswith("n<min") and r["proxy_fid"] == "n<min (60<512)" for r in written)
    assert all(float(r["kid_se"]) > 0 and r["precision"] == "n<min (60<100)" for r in written)
    assert all(float(r["sample_seconds"]) > 0 for r in written)  # what the samples cost, beside the training
    for row in written:  # every cell keeps its checkpoint and the samples the metrics scored
        cell_dir = out / "cells" / f"tiny_{row['model']}_conv_2_0_default_uncond_epochs"
        assert cell_dir.is_dir() and str(cell_dir) == row["cell_dir"]
        state = torch.load(cell_dir / "checkpoint.pt", weights_only=True)
        assert "generator" in state and state["cell"]["model"] == row["model"]
        assert np.load(cell_dir / "samples.npz")["images"].shape == (60, 1, 16, 16)
    assert "bank" in torch.load(out / "cells" / "tiny_neurosql_conv_2_0_default_uncond_epochs" / "checkpoint.pt",
                                weights_only=True)
    controls = {r["model"] for r in _read(out / "controls.csv")}
    assert controls == {f"control:{c}" for c in ("real_unseen", "real_train", "noise", "mean_image", "blurred",
                                                "phase_scrambled")}
    report = (out / "results.md").read_text()
    assert "| tiny | epochs | neurosql | conv | 2 | default |" in report and "| tiny | control | noise |" in report
    assert "Control check:" in report and "n<min (60<512)" in report
    assert (out / "domain_encoder.pt").is_file() and list(out.glob("comparison_tiny_*.png"))
    paired = _read(out / "paired.csv")  # NeuroSQL against the GAN of the same seed, with the SE of the difference
    assert {(r["a"], r["b"]) for r in paired} == {("neurosql/default/epochs", "gan/default/epochs")}
    assert [r["space"] for r in paired] == ["domain", "classifier", "autoencoder"]  # the cross-check spaces too
    assert all(float(r["se"]) > 0 for r in paired) and "Paired KID differences" in report
    # any two settings of the run, compared seed by seed without training: the same numbers, the other way round
    swapped = benchmark.main([*args, "--pair", "gan/default/epochs", "neurosql/default/epochs"])
    written_pair = _read(out / "paired_gan_default_epochs_vs_neurosql_default_epochs.csv")
    assert [r["space"] for r in written_pair] == ["domain", "classifier", "autoencoder"] and len(swapped) == 3
    for mine, theirs in zip(written_pair, paired, strict=True):
        assert float(mine["difference"]) == pytest.approx(-float(theirs["difference"]))
        assert float(mine["se"]) == pytest.approx(float(theirs["se"]))
    assert len(_read(out / "results.csv")) == 2  # nothing trained
    with pytest.raises(ValueError, match=r"\['vae/default/epochs'\].*'gan/default/epochs', 'neurosql"):
        benchmark.main([*args, "--pair", "vae/default/epochs", "gan/default/epochs"])
    assert all(float(r["kid_classifier"]) > -1 and float(r["kid_autoencoder_se"]) > 0 for r in written)
    assert (out / "domain_encoder_classifier.pt").is_file() and (out / "domain_encoder_autoencoder.pt").is_file()
    # the quick second look (benchmarks/controls_in_spaces.py) gives the run's own KIDs, controls and cells alike
    import importlib.util

    spec = importlib.util.spec_from_file_location("controls_in_spaces", Path(__file__).resolve().parents[1] /
                                                  "benchmarks" / "controls_in_spaces.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    second = {r["set"]: r for r in script.main(["--dataset", str(npz), "--num-samples", "60", "--output", str(out),
                                                 "--encoders", f"again={out / 'domain_encoder.pt'}"])}
    controls_rows = {r["model"]: r for r in _read(out / "controls.csv")}
    for row in written:
        again = second[f"tiny_{row['model']}_conv_2_0_default_uncond_epochs"]
        for space in ("", "_classifier", "_autoencoder"):
            assert again[f"kid_{'domain' if not space else space[1:]}"] == pytest.approx(float(row[f"kid{space}"]),
                                                                                           rel=1e-4, abs=1e-6)
    assert second["control:noise"]["kid_domain"] == pytest.approx(float(controls_rows["control:noise"]["kid"]),
                                                                  rel=1e-4, abs=1e-6)
    # 48 training images: the controls made of them are below KID's minimum, in both
    assert second["control:phase_scrambled"]["kid_domain"] == controls_rows["control:phase_scrambled"]["kid"] == \
        "n<min (48<50)"
    assert all(r["kid_again"] == r["kid_domain"] for r in second.values())  # an extra space: the same encoder here
    assert (out / "controls_in_spaces.csv").is_file()
    with pytest.raises(ValueError, match="NAME=PATH"):
        script.main(["--dataset", str(npz), "--num-samples", "60", "--output", str(out), "--encoders", "deeper"])
    assert sorted(p.name for p in data_dir.iterdir()) == ["tiny.npz"]  # nothing written next to the data
    assert not list(out.glob("cells/*/resume.pt"))  # recorded cells keep no resume checkpoint
    # a second call finds every cell done; another protocol adds its own cells
    assert len(benchmark.main(args)) == 2
    early = benchmark.main([*args[:3], "neurosql", *args[5:], "--protocol", "early_stop", "--max-epochs", "2",
                            "--eval-every", "1", "--patience", "1", "--val-samples", "20"])
    assert len(early) == 3 and early[-1]["protocol"] == "early_stop" and 1 <= early[-1]["best_epoch"] <= 2
    saved = torch.load(Path(early[-1]["cell_dir"]) / "checkpoint.pt", weights_only=True)["validation_kids"]
    assert [epoch for epoch, _ in saved] == list(range(1, len(saved) + 1)) and 1 <= len(saved) <= 2
    assert min(saved, key=lambda item: item[1])[0] == early[-1]["best_epoch"]  # the best epoch is the lowest KID
    progress = capfd.readouterr().err  # the cells (child processes) report their epochs and validation KIDs
    assert "epoch 1/2: " in progress and "epoch 1: validation KID " in progress and "(best " in progress
    assert "sampling 60 images" in progress and "sampled 60 images in " in progress
    with pytest.raises(ValueError, match="wallclock-seconds"):
        benchmark.main([*args, "--protocol", "wallclock"])


def test_the_ddpm_ema_variant_samples_and_saves_its_moving_average():
    images = torch.rand(8, 1, 16, 16)
    data = {"train_images": images, "train_labels": torch.zeros(8, dtype=torch.long), "num_classes": 1}
    cell = {"model": "ddpm", "variant": "ema", "backbone": "conv", "latent_size": 4, "seed": 0, "conditional": False}
    loader = [{"image": images}]
    built = cells.build_model(cell, data, loader, 1, torch.device("cpu"), {"ddpm_sampling_steps": 2})
    assert set(built["modules"]) == {"unet", "ema"} and built["trainer"].ema is built["modules"]["ema"]
    assert cells.cell_key({**cell, "dataset": "x"}) != cells.cell_key({**cell, "dataset": "x", "variant": "default"})
    plain = cells.build_model({**cell, "variant": "default"}, data, loader, 1, torch.device("cpu"), {})
    assert set(plain["modules"]) == {"unet"} and plain["trainer"].ema is None


@pytest.mark.parametrize("model", ["neurosql", "vae", "gan", "ddpm"])
def test_every_trainer_trains_with_channels_last_weights_on_the_cpu_unless_told_not_to(model):
    images = torch.rand(8, 1, 16, 16)
    data = {"train_images": images, "train_labels": torch.zeros(8, dtype=torch.long), "num_classes": 1}
    cell = {"model": model, "variant": "ema" if model == "ddpm" else "default", "backbone": "conv",
            "latent_size": 4, "seed": 0, "conditional": False}
    loader = [{"image": images, "index": torch.arange(8), "label": torch.zeros(8, dtype=torch.long)}]
    losses, modules = {}, {}
    for last in (True, False):
        torch.manual_seed(0)
        built = cells.build_model(cell, data, loader, 1, torch.device("cpu"),
                                  {"ddpm_sampling_steps": 2, "channels_last": last})
        convs = [p for m in built["modules"].values() for p in m.parameters() if p.dim() == 4]
        assert all(p.is_contiguous() for p in convs) != last  # the average of the DDPM's weights alike
        torch.manual_seed(1)
        trainer = built["trainer"]
        losses[last] = [trainer._iteration(trainer, loader[0])["loss"] for _ in range(3)]
        modules[last] = built["modules"]
        samples = built["sampler"](3, 0, None)
        assert samples.shape == (3, 1, 16, 16) and torch.isfinite(samples).all()
    # the same training to float rounding, and a checkpoint of one layout loads into the other, keeping its layout
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    for name, module in modules[False].items():
        module.load_state_dict(modules[True][name].state_dict())
        for p, q in zip(module.parameters(), modules[True][name].parameters(), strict=True):
            assert p.is_contiguous() and torch.equal(p, q)

def test_each_model_runs_its_own_default_variant_unless_one_of_its_variants_is_named():
    from monai_neurosql.benchmark import cli

    def planned(*extra):
        args = cli.parse_args(["--models", "neurosql", "gan", "ddpm", "--seeds", "0", *extra])
        return [(c["model"], c["variant"]) for c in cli.plan_cells(args, "d", False)]

    # the DDPM samples from its moving average unless its raw weights ("default") are asked for
    assert planned() == [("neurosql", "default"), ("gan", "default"), ("ddpm", "ema")]
    assert planned("--variants", "hinge") == [("neurosql", "default"), ("gan", "hinge"), ("ddpm", "ema")]
    assert planned("--variants", "default") == [("neurosql", "default"), ("gan", "default"), ("ddpm", "default")]
    assert planned("--variants", "paper", "ema", "default") == [  # in the order named
        ("neurosql", "paper"), ("neurosql", "default"), ("gan", "default"), ("ddpm", "ema"), ("ddpm", "default")]
    two_sizes = planned("--latent-sizes", "4", "16")  # the DDPM has no latent size: once
    assert len(two_sizes) == 5 and two_sizes.count(("ddpm", "ema")) == 1


def test_cell_keys_and_directories_never_contain_the_dataset_path(tmp_path):
    cell = {"dataset": benchmark.dataset_name("/abs/path/to/my data.npz"), "model": "gan", "backbone": "conv",
            "latent_size": 16, "seed": 0, "variant": "hinge", "conditional": False, "protocol": "wallclock"}
    assert cell["dataset"] == "my_data"
    assert cells.cell_dir(tmp_path, cell) == tmp_path / "cells" / "my_data_gan_conv_16_0_hinge_uncond_wallclock"
    assert benchmark.dataset_name("/data/OASIS-1/") == "OASIS-1" and benchmark.dataset_name("demo") == "demo"


def test_comparison_grids_show_every_variant_and_the_ddpm_beside_every_latent_size(tmp_path, monkeypatch):
    from monai_neurosql import visualize

    saved = {}
    monkeypatch.setattr(visualize, "save_grid_png", lambda images, path, **kw: saved.__setitem__(path.name, images))
    rows = []
    cells_run = (("ddpm", 4, "ema", 0), ("neurosql", 4, "paper", 0), ("neurosql", 4, "default", 0),
                 ("neurosql", 16, "default", 0), ("vae", 16, "default", 0), ("ddpm", 4, "default", 0),
                 ("vae", 16, "default", 1))  # a second seed is not shown
    for model, latent, variant, seed in cells_run:
        cell_dir = tmp_path / f"{model}_{latent}_{variant}_{seed}"
        cell_dir.mkdir()
        np.savez(cell_dir / "samples.npz", images=np.full((16, 1, 8, 8), float(len(rows)), dtype=np.float32))
        rows.append({"dataset": "d", "backbone": "conv", "latent_size": str(latent), "conditional": "False",
                     "variant": variant, "seed": str(seed), "model": model, "protocol": "epochs",
                     "cell_dir": str(cell_dir)})
    tables.comparison_grids(rows, torch.zeros(20, 1, 8, 8), tmp_path)
    z4, z16 = saved["comparison_d_epochs_conv_z4_uncond.png"], saved["comparison_d_epochs_conv_z16_uncond.png"]
    assert z4.shape[0] == 5 * 16 and z16.shape[0] == 5 * 16  # real row + one row per model and variant

    def shown(grid):  # which cell each row of 16 came from (its fill value)
        return [int(grid[i * 16].max()) for i in range(1, grid.shape[0] // 16)]

    # models in MODELS order, each model's default first; the DDPM's variants beside every latent size
    assert shown(z4) == [2, 1, 5, 0] and shown(z16) == [3, 4, 5, 0]


def test_summary_reports_mean_std_minimum_counts_and_flags_controls():
    base = {"dataset": "d", "model": "neurosql", "backbone": "conv", "latent_size": "16", "variant": "default",
            "conditional": "False", "protocol": "epochs", "params": "10", "sec_per_epoch": "1.0",
            "domain_fid": "n<min (64<256)"}
    rows = [{**base, "seed": str(s), "kid": str(0.1 + s / 10), "recall": "0.5"} for s in (0, 1)]
    controls = [{"dataset": "d", "model": "control:noise", "kid": "0.12", "recall": "0.0"},
                {"dataset": "d", "model": "control:real_unseen", "kid": "0.0", "recall": "0.9"}]
    table = tables.summarize(rows, controls)
    header, _, line, *control_lines = table.splitlines()
    assert "KID ↓" in header and "domain-FID ↓" in header and "clf" not in header
    assert "| 2 | 10 |" in line and "0.15 ± 0.071" in line and "n<min (64<256)" in line
    assert control_lines[0].startswith("| d | control | noise |")
    flags = tables.control_report(rows, controls)
    assert flags == [("d, epochs, conv, d=16, cond=False: kid: noise (0.12) ranks at or better than neurosql/default "
                     "(0.15)")]


def test_any_benchmark_data_set_exports_to_the_medmnist_layout(tmp_path):
    from monai_neurosql.benchmark.data import export_medmnist_npz

    npz = write_npz(tmp_path / "tiny.npz", shape=(16, 16), n=(12, 5, 7))
    data = benchmark.load_benchmark_data(str(npz), None, 100, tmp_path / "work")
    again = benchmark.load_benchmark_data(str(export_medmnist_npz(data, tmp_path / "copy.npz")), None, 100,
                                          tmp_path / "work2")
    for key in ("train_images", "train_labels", "unseen_images", "reference_images", "reference_labels"):
        assert torch.equal(data[key], again[key]), key
    assert again["name"] == "copy" and len(again["unseen_images"]) == 5


def test_classical_augmentation_shifts_by_a_tenth_of_the_image():
    """RandAffine's translate_range is in pixels: the shift must be +- 10% of the side (2.8 px at 28), not 0.1 px."""
    from monai_neurosql.benchmark.augmentation import classical_augmentation

    image = torch.zeros(40, 1, 28, 28)
    image[:, :, 12:16, 12:16] = 1.0
    moved = classical_augmentation((28, 28), seed=0)(image)
    grid = torch.arange(28.0)
    centre_x = (moved.sum(2) * grid).sum(-1).squeeze(1) / moved.sum((2, 3)).squeeze(1)
    assert moved.shape == image.shape and (centre_x - 13.5).abs().max() > 1.5


def _paired_rows(tmp_path, specs):
    """Benchmark rows whose cells hold ``samples.npz`` drawn around a given mean (features = the pixels)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for i, (model, variant, protocol, seed, shift) in enumerate(specs):
        cell_dir = tmp_path / f"cell{i}"
        cell_dir.mkdir()
        np.savez(cell_dir / "samples.npz", images=(torch.randn(120, 1, 2, 2, generator=g) + shift).numpy())
        rows.append({"dataset": "d", "backbone": "conv", "latent_size": "16", "conditional": "False", "seed": str(seed),
                     "model": model, "variant": variant, "protocol": protocol, "cell_dir": str(cell_dir)})
    return rows


def test_paired_comparisons_anchor_on_neurosql_of_the_same_seed_and_resolve_clear_differences(tmp_path):
    from monai_neurosql.benchmark import paired

    specs = [("neurosql", "paper", "epochs", 0, 0.0), ("neurosql", "default", "epochs", 0, 0.0),
             ("vae", "default", "epochs", 0, 1.5), ("gan", "default", "wallclock", 0, 0.05),
             ("neurosql", "paper", "epochs", 1, 0.0), ("vae", "default", "epochs", 1, 1.5),
             ("gan", "default", "epochs", 2, 0.0)]  # no NeuroSQL of seed 2: no pair
    rows = _paired_rows(tmp_path, specs)
    pairs = [(paired._name(a), paired._name(b), a["seed"]) for a, b in paired.comparison_pairs(rows)]
    assert pairs == [("neurosql/default/epochs", "neurosql/paper/epochs", "0"),
                     ("neurosql/default/epochs", "vae/default/epochs", "0"),
                     ("neurosql/default/epochs", "gan/default/wallclock", "0"),  # wall-clock: NeuroSQL's epochs row
                     ("neurosql/paper/epochs", "vae/default/epochs", "1")]  # no default variant: the first one
    reference = torch.randn(120, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    spaces = {"pixels": lambda x: x.flatten(1), "brightness": lambda x: x.flatten(1).mean(1, keepdim=True)}
    scored = paired.paired_kid_rows(rows, reference, spaces)
    assert [r["space"] for r in scored] == ["pixels"] * 4 + ["brightness"] * 4  # every pair in every space
    scored = [r for r in scored if r["space"] == "pixels"]
    verdicts = {(r["b"], r["seed"]): r["verdict"] for r in scored}
    assert verdicts[("vae/default/epochs", "0")] == "a closer" and verdicts[("vae/default/epochs", "1")] == "a closer"
    assert verdicts[("neurosql/paper/epochs", "0")] == "not resolved"  # the same distribution
    table = paired.paired_table(scored)
    vae_line = next(line for line in table.splitlines()
                    if "| neurosql/default/epochs | vae/default/epochs | pixels |" in line)
    assert vae_line.endswith("| 1 / 0 / 0 |") and "s0: -" in vae_line
    assert len(table.splitlines()) == 2 + 4
    (tmp_path / "cell2" / "samples.npz").unlink()  # a cell without samples is skipped, not an error
    assert [r["b"] for r in paired.paired_kid_rows(rows[:4], reference, {"pixels": lambda x: x.flatten(1)})] == [
        "neurosql/paper/epochs", "gan/default/wallclock"]
    few = paired.paired_kid_rows(rows[:2], reference[:30], {"pixels": lambda x: x.flatten(1)})
    assert {r["verdict"] for r in few} == {"n<min"} and "s0: n<min (30<50)" in paired.paired_table(few)
    # two named settings, paired seed by seed where both exist (seed 1 has no NeuroSQL default, seed 2 no VAE)
    named = paired.named_pairs(rows, "vae/default/epochs", "neurosql/paper/epochs")
    assert [(a["model"], b["variant"], a["seed"]) for a, b in named] == [("vae", "paper", "0"), ("vae", "paper", "1")]
    with pytest.raises(ValueError, match=r"\['ddpm/ema/epochs'\].*'gan/default/epochs'"):
        paired.named_pairs(rows, "ddpm/ema/epochs", "vae/default/epochs")


def test_results_csv_written_by_an_older_version_is_rewritten_with_todays_columns_on_resume(tmp_path):
    from monai_neurosql.benchmark import cli
    from monai_neurosql.utils import write_csv

    path = tmp_path / "results.csv"
    path.write_text("dataset,model,kid,cell_dir\nd,vae,0.5,/x\n")  # an older header, without today's columns
    write_csv(path, [{"dataset": "d", "model": "gan", "kid": "0.1", "kid_classifier": "0.2"}], cli.FIELDS, append=True)
    rows = _read(path)
    assert list(rows[0]) == cli.FIELDS
    assert [(r["model"], r["kid"], r["kid_classifier"], r["cell_dir"]) for r in rows] == [
        ("vae", "0.5", "", "/x"), ("gan", "0.1", "0.2", "")]
    write_csv(path, [{"dataset": "d", "model": "ddpm"}], cli.FIELDS, append=True)  # same header: appended
    assert [r["model"] for r in _read(path)] == ["vae", "gan", "ddpm"]


def test_a_kill_while_writing_results_csv_leaves_the_previous_file(tmp_path, monkeypatch):
    from monai_neurosql.benchmark import cli
    from monai_neurosql.utils import write_csv

    path = tmp_path / "results.csv"
    write_csv(path, [{"dataset": "d", "model": "vae"}, {"dataset": "d", "model": "gan"}], cli.FIELDS)
    before = path.read_bytes()

    def killed(self, rows):
        self.writerow(next(iter(rows)))
        raise KeyboardInterrupt

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        write_csv(path, [{"dataset": "d", "model": "ddpm"}], cli.FIELDS, append=True)
    assert path.read_bytes() == before and [r["model"] for r in _read(path)] == ["vae", "gan"]


def test_a_vae_beta_selection_cut_by_a_kill_continues_with_the_next_beta(tmp_path):
    from monai_neurosql.benchmark import cli

    path, trained = tmp_path / "vae_beta_selection.json", []

    def score(beta, cut_at=None):
        if beta == cut_at:
            raise KeyboardInterrupt
        trained.append(beta)
        return {0.001: 3.0, 0.005: 1.0, 0.02: 2.0}[beta]

    with pytest.raises(KeyboardInterrupt):
        cli._select_beta(path, "conv|16", [0.001, 0.005, 0.02], lambda b: score(b, cut_at=0.02), criterion="KID")
    assert trained == [0.001, 0.005]  # the two finished scores are kept
    assert cli._select_beta(path, "conv|16", [0.001, 0.005, 0.02], score, criterion="KID") == 0.005
    assert trained == [0.001, 0.005, 0.02]  # only the cut beta trained again
    assert cli._select_beta(path, "conv|16", [0.001, 0.005, 0.02], score, criterion="KID") == 0.005
    assert len(trained) == 3  # chosen: reused without training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae_beta_selection.json"]


def test_a_vae_beta_selection_looks_beyond_the_grid_while_the_best_lies_on_its_edge(tmp_path, caplog):
    from monai_neurosql.benchmark import cli

    trained = []

    def score(beta):  # best at 0.08, beyond the grid's largest
        trained.append(beta)
        return abs(math.log(beta / 0.08))

    path = tmp_path / "vae_beta_selection.json"
    assert cli._select_beta(path, "g", [0.001, 0.005, 0.02], score, criterion="KID") == 0.08
    assert trained == [0.001, 0.005, 0.02, 0.08, 0.32]  # x4, the grid's ratio at that edge, until a worse one
    assert json.loads(path.read_text())["g"]["chosen"] == 0.08
    assert cli._select_beta(path, "g", [0.001, 0.005, 0.02], score, criterion="KID") == 0.08 and len(trained) == 5
    # an older selection whose best lay on the edge is extended too; below the grid it divides
    path.write_text(json.dumps({"g": {"kid_by_beta": {"0.01": 2.0, "0.1": 3.0}, "chosen": 0.01}}))
    assert cli._select_beta(path, "g", [0.01, 0.1], lambda b: {0.001: 1.0, 0.0001: 1.5}[b], "KID") == 0.001
    # at most MAX_BETA_EXTENSIONS, then a warning says to widen the grid
    caplog.set_level(logging.INFO)
    assert cli._select_beta(tmp_path / "s.json", "g", [1.0, 2.0], lambda b: -b, "KID") == 16.0
    assert "still on the edge" in caplog.text and "widen --vae-betas" in caplog.text


def test_benchmark_images_are_transformed_once_and_again_only_when_a_file_changes(tmp_path, monkeypatch, caplog):
    """Every child process of a run loads the data: the transformed tensors are cached under the output folder,
    keyed by the drawn records (image files by size and modification time, arrays by their bytes)."""
    import logging
    import os

    from monai_neurosql.benchmark import data as bench_data
    from tests.data.conftest import write_slice

    root = tmp_path / "oasis" / "Data"
    for label, folder in enumerate(["Non Demented", "Very mild Dementia", "Mild Dementia", "Moderate Dementia"]):
        for subject in range(10):
            write_slice(root / folder / f"OAS1_{10 * label + subject + 1:04d}_MR1_mpr-1_100.jpg", value=120 + 30 * label,
                        seed=10 * label + subject)
    real, calls = bench_data._tensors, []
    monkeypatch.setattr(bench_data, "_tensors", lambda records, transform: calls.append(1) or real(records, transform))

    def load(dataset):
        calls.clear()
        return bench_data.load_benchmark_data(str(dataset), 16, 100, tmp_path / "work")

    first = load(tmp_path / "oasis")
    assert len(calls) == 3 and len(list((tmp_path / "work" / "tensor_cache").glob("*.pt"))) == 1
    again = load(tmp_path / "oasis")
    assert calls == [] and all(torch.equal(first[k], again[k]) for k in bench_data._CACHED)
    changed_file = root / "Mild Dementia" / "OAS1_0021_MR1_mpr-1_100.jpg"
    write_slice(changed_file, value=60, seed=99)
    os.utime(changed_file, ns=(changed_file.stat().st_atime_ns, changed_file.stat().st_mtime_ns + 10**9))
    changed = load(tmp_path / "oasis")
    assert len(calls) == 3 and len(list((tmp_path / "work" / "tensor_cache").glob("*.pt"))) == 2
    assert any(not torch.equal(first[k], changed[k]) for k in ("train_images", "unseen_images", "reference_images"))
    for cache in (tmp_path / "work" / "tensor_cache").glob("*.pt"):
        cache.write_bytes(b"PK\x03\x04 cut")  # a damaged cache: named, set aside, the images loaded again
    with caplog.at_level(logging.WARNING, logger="monai_neurosql.benchmark.data"):
        damaged = load(tmp_path / "oasis")
    assert len(calls) == 3 and "cannot be used" in caplog.text
    assert all(torch.equal(changed[k], damaged[k]) for k in bench_data._CACHED)
    npz = write_npz(tmp_path / "set.npz", shape=(8, 8), n=(12, 6, 6))
    load(npz)
    assert len(calls) == 3 and load(npz) and calls == []
    write_npz(npz, shape=(8, 8), n=(12, 6, 6), seed=1)  # other pixels, same name
    load(npz)
    assert len(calls) == 3


def test_a_capped_split_is_drawn_from_every_class_not_cut_to_its_first(tmp_path):
    """A class-sorted file (the demo brains' export is one) capped below its size keeps every class."""
    labels = np.repeat(np.arange(4), 30)[:, None]  # 120 training images sorted by class
    npz = write_npz(tmp_path / "sorted.npz", shape=(8, 8), n=(120, 40, 40), train_labels=labels,
                    test_labels=np.repeat(np.arange(4), 10)[:, None])
    data = benchmark.load_benchmark_data(str(npz), None, 40, tmp_path / "work", max_reference=20)
    train_counts = torch.bincount(data["train_labels"], minlength=4)
    assert len(data["train_labels"]) == 40 and (train_counts >= 4).all(), train_counts
    assert len(torch.unique(data["reference_labels"])) == 4
    again = benchmark.load_benchmark_data(str(npz), None, 40, tmp_path / "work2", max_reference=20)
    assert torch.equal(data["train_images"], again["train_images"])  # the same draw in every run


def test_class_mix_shift_names_the_classes_a_model_never_trained_on():
    from monai_neurosql.benchmark.data import class_mix_shift

    test = torch.arange(4).repeat_interleave(25)
    assert class_mix_shift(test[torch.randperm(100)], test) == ""  # the same mix
    assert class_mix_shift(torch.tensor([0] * 30 + [1] * 20 + [2] * 27 + [3] * 23), test) == ""  # within 0.1
    message = class_mix_shift(torch.tensor([0] * 82 + [1] * 18), test)  # the first-N cut of a sorted file
    assert "total variation 0.57" in message and "never trained on: [2, 3]" in message
    assert "class 2: 0% of training vs 25% of test" in message


def _resumable_cell(tmp_path):
    """Tiny data, an encoder and the settings of an early-stopped cell that saves its resume.pt every epoch."""
    from monai_neurosql.metrics import save_domain_encoder, train_domain_encoder

    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(48, 1, 16, 16, generator=g), torch.arange(48) % 2
    data = {"name": "tiny", "train_images": images[:32], "train_labels": labels[:32], "num_classes": 2,
            "unseen_images": images[32:40], "reference_images": images[40:], "reference_labels": labels[40:]}
    encoder = save_domain_encoder(train_domain_encoder(images[:32], labels[:32], kind="autoencoder", epochs=1),
                                  tmp_path / "encoder.pt")
    settings = {"threads": 1, "device": "cpu", "batch_size": 16, "num_samples": 8, "epochs": 4, "max_epochs": 4,
                "eval_every": 1, "patience": 10, "val_samples": 8, "resume_every": 0, "ddpm_timesteps": 20,
                "ddpm_sampling_steps": 2, "audit_samples": 8, "encoder_path": str(encoder), "cross_spaces": []}
    return data, settings


def _crash_at_epoch(monkeypatch, epoch: int) -> None:
    """The early-stopping evaluation (before the resume checkpoint of its epoch) raises at ``epoch``: a kill."""
    evaluate = cells._EarlyStopping.__call__

    def crashing(self, engine):
        if engine.state.epoch == epoch:
            raise RuntimeError("killed")
        evaluate(self, engine)

    monkeypatch.setattr(cells._EarlyStopping, "__call__", crashing)


def _same(a, b) -> bool:
    """Nested state dicts hold equal tensors and values."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.parametrize("model", ["neurosql", "vae", "gan", "ddpm"])
def test_a_cell_cut_mid_training_resumes_to_the_same_result(tmp_path, monkeypatch, model):
    data, settings = _resumable_cell(tmp_path)
    cell = {"dataset": "tiny", "model": model, "backbone": "conv", "latent_size": 2, "seed": 0,
            "variant": cells.DEFAULT_VARIANTS[model], "conditional": False, "protocol": "early_stop"}
    whole = cells.run_cell(cell, data, {**settings, "output": str(tmp_path / "whole")})
    cut = {**settings, "output": str(tmp_path / "cut")}
    with monkeypatch.context() as patch:
        _crash_at_epoch(patch, 3)
        with pytest.raises(RuntimeError, match="killed"):
            cells.run_cell(cell, data, cut)
    saved = torch.load(cells.cell_dir(cut["output"], cell) / "resume.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 2 * 2  # epoch 2 of 2 batches
    evaluated, evaluate = [], cells._EarlyStopping.__call__
    monkeypatch.setattr(cells._EarlyStopping, "__call__",
                        lambda self, engine: (evaluated.append(engine.state.epoch), evaluate(self, engine)))
    resumed = cells.run_cell(cell, data, cut)
    assert evaluated == [3, 4]  # only the epochs after the saved one were trained
    assert resumed["train_seconds"] > saved["clock"]["seconds"] > 0  # the clock carried on
    assert resumed["best_epoch"] == whole["best_epoch"] and resumed["epochs_run"] == whole["epochs_run"] == 4
    a, b = (torch.load(Path(r["cell_dir"]) / "checkpoint.pt", weights_only=True) for r in (whole, resumed))
    assert a["validation_kids"] == b["validation_kids"] and len(a["validation_kids"]) == 4
    for name in {"neurosql": ["generator", "bank"], "vae": ["vae"], "gan": ["generator", "discriminator"],
                 "ddpm": ["unet", "ema"]}[model]:
        assert _same(a[name], b[name]), name
    samples = [np.load(Path(r["cell_dir"]) / "samples.npz")["images"] for r in (whole, resumed)]
    assert np.array_equal(*samples)


def test_a_resumed_cell_checks_its_settings_never_trains_twice_and_survives_damaged_files(tmp_path, monkeypatch,
                                                                                         caplog):
    data, settings = _resumable_cell(tmp_path)
    settings["output"] = str(tmp_path / "out")
    cell = {"dataset": "tiny", "model": "neurosql", "backbone": "conv", "latent_size": 2, "seed": 0,
            "variant": "default", "conditional": False, "protocol": "early_stop"}
    folder = cells.cell_dir(settings["output"], cell)
    with monkeypatch.context() as patch:
        _crash_at_epoch(patch, 2)
        with pytest.raises(RuntimeError, match="killed"):
            cells.run_cell(cell, data, settings)
    with pytest.raises(ValueError, match=r"resume\.pt holds this cell's training under other settings \(patience "
                                         r"'10' -> '3'\)"):
        cells.run_cell(cell, data, {**settings, "patience": 3})
    # settings this cell's training does not use may change; the kill comes between the last epoch's write and the
    # end-of-training write, which would mark the file finished
    irrelevant = {**settings, "epochs": 9, "ddpm_timesteps": 7}
    with monkeypatch.context() as patch:
        patch.setattr("monai_neurosql.handlers.AtomicCheckpointSaver.completed",
                      lambda *a: (_ for _ in ()).throw(RuntimeError("killed at the end")))
        with pytest.raises(RuntimeError, match="killed at the end"):
            cells.run_cell(cell, data, irrelevant)
    assert torch.load(folder / "resume.pt", weights_only=True)["checkpointer"]["finished"] is None
    with monkeypatch.context() as patch:  # not trained again; its samples are saved, then scoring is cut
        patch.setattr("monai_neurosql.metrics.SampleScorer.__call__", lambda *a, **k: (_ for _ in ()).throw(
            RuntimeError("killed while scoring")))
        with caplog.at_level("INFO", logger="monai_neurosql.benchmark.cells"), pytest.raises(
                RuntimeError, match="killed while scoring"):
            cells.run_cell(cell, data, settings)
    assert "(epoch 4, training finished)" in caplog.text
    drawn = np.load(folder / "samples.npz")["images"]
    caplog.clear()
    with caplog.at_level("INFO", logger="monai_neurosql.benchmark.cells"):
        row = cells.run_cell(cell, data, settings)
    assert "already sampled after this training" in caplog.text and "sampling 8 images" not in caplog.text
    assert np.array_equal(np.load(Path(row["cell_dir"]) / "samples.npz")["images"], drawn)
    kids = torch.load(folder / "checkpoint.pt", weights_only=True)["validation_kids"]
    assert [epoch for epoch, _ in kids] == [1, 2, 3, 4] and row["epochs_run"] == 4  # each epoch trained once
    # damaged files: unreadable samples are drawn again; an unreadable resume.pt is set aside and training restarts
    (folder / "samples.npz").write_bytes(b"PK\x03\x04 cut")
    caplog.clear()
    with caplog.at_level("INFO", logger="monai_neurosql.benchmark.cells"):
        cells.run_cell(cell, data, settings)
    assert "cannot be read" in caplog.text and "sampling 8 images" in caplog.text
    assert np.array_equal(np.load(folder / "samples.npz")["images"], drawn)
    (folder / "resume.pt").write_bytes(b"PK\x03\x04 cut")
    caplog.clear()
    with caplog.at_level("INFO", logger="monai_neurosql.benchmark.cells"):
        row = cells.run_cell(cell, data, settings)
    assert "moved to" in caplog.text and (folder / "resume.pt.damaged").read_bytes() == b"PK\x03\x04 cut"
    assert row["epochs_run"] == 4 and "resuming from" not in caplog.text


def test_cross_check_spaces_skip_only_the_headline_space():
    """A full-size encoder of the headline's kind is its own space and is skipped; next to a headline that sees the
    images resized, the full-size encoder of the same kind is another space and is scored."""
    from monai_neurosql.benchmark.cli import _cross_spaces
    from monai_neurosql.metrics import DomainEncoder

    data = {"train_labels": torch.tensor([0, 1, 0, 1])}
    for input_size, expected in ((None, ["classifier", "contrastive"]),
                                 (16, ["classifier", "autoencoder", "contrastive"])):
        encoder = DomainEncoder(2, 1, feature_size=4, channels=(4,), input_size=input_size)
        encoder.info = {"kind": "autoencoder"}
        assert _cross_spaces(["classifier", "autoencoder", "contrastive"], encoder, data) == expected
    assert _cross_spaces(["classifier", "contrastive"], encoder, {"train_labels": torch.zeros(4)}) == ["contrastive"]
    with pytest.raises(ValueError, match="unknown --cross-spaces"):
        _cross_spaces(["vgg"], encoder, data)


def test_results_md_says_how_the_domain_encoder_seed_was_chosen_and_warns_when_its_structure_margin_is_low():
    from monai_neurosql.benchmark.cli import _structure_note, _structure_warning

    chosen = {"kind": "autoencoder", "seed": 2, "candidates": 3, "structure_z": 9.46,
              "candidate_structure_z": [4.23, -0.06, 9.46]}
    assert "seed 2 kept of 3 candidates" in _structure_note(chosen) and "4.2, -0.1, 9.5" in _structure_note(chosen)
    assert _structure_warning(chosen) == []
    assert _structure_note({"kind": "contrastive", "candidates": 1}) == "" == _structure_note({"kind": "classifier"})
    assert _structure_warning({"kind": "contrastive"}) == []  # not measured: no warning
    low = {**chosen, "structure_z": 2.5}
    assert len(_structure_warning(low)) == 1 and "only 2.5 SE" in _structure_warning(low)[0]
