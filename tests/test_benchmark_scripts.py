"""The quality-study scripts under ``benchmarks/`` run end to end on tiny data (their timing is not tested)."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

from tests.data.test_medmnist import write_npz

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_selection_names_the_checkpoint_each_criterion_keeps():
    script = _script("model_selection")
    rows = [{"epoch": 2, "val_cost": 0.5, "val_kid": 3.0}, {"epoch": 4, "val_cost": 0.4, "val_kid": 2.0},
            {"epoch": 6, "val_cost": 0.4, "val_kid": 1.0}, {"epoch": 8, "val_cost": 0.45, "val_kid": 1.5}]
    picks = script.candidate_epochs(rows)
    assert list(picks.values()) == [4, 8, 6]  # first of equal costs (as CheckpointSaver keeps), last, lowest KID


def test_model_selection_traces_cost_and_kid_and_scores_the_candidates(tmp_path):
    from monai_neurosql.benchmark.data import load_benchmark_data
    from monai_neurosql.metrics import save_domain_encoder, train_domain_encoder

    npz = write_npz(tmp_path / "tiny.npz", shape=(16, 16), n=(48, 40, 60))
    out = tmp_path / "run"
    data = load_benchmark_data(str(npz), None, 48, out)
    save_domain_encoder(train_domain_encoder(data["train_images"], kind="contrastive", epochs=1), out / "domain_encoder.pt")
    text = _script("model_selection").main(["--dataset", str(npz), "--max-train", "48", "--epochs", "3", "--every", "2",
                                            "--output", str(out)])
    with open(out / "model_selection_e3_s0.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [2, 3]  # every 2 epochs, and the last one
    assert all(float(r["val_cost"]) > 0 for r in rows)
    assert "best.pt minus model.pt (paired)" in text and "test KID domain (contrastive)" in text
    assert (out / "model_selection_e3_s0.md").read_text() == text


def test_gpu_stages_are_valid_benchmark_commands_writing_under_runs():
    from tests.test_documented_benchmark_commands import PREFIX, parse

    script = _script("issue12_gpu")
    assert list(script.STAGES) == ["demo64_ddpm_es", "demo64_ddpm_wallclock", "demo128", "fmnist_ddpm_es"]
    for folder, commands in script.STAGES.values():
        for argv in commands:
            args = parse([*PREFIX, *script.command(argv, Path("runs/issue12_gpu") / folder, 4, "cuda")])
            assert args.device == "cuda" and args.seeds == [0, 1, 2] and args.output.startswith("runs/")
            if "ddpm" in args.models and args.protocol == "early_stop":  # the DDPM's own validation budget
                assert (args.eval_every, args.val_samples, args.models) == (10, 256, ["ddpm"])


@pytest.mark.slow
def test_gpu_stage_runs_every_model_and_protocol_on_tiny_settings_and_copies_results_without_checkpoints(tmp_path):
    script = _script("issue12_gpu")
    runs, out = tmp_path / "runs", tmp_path / "out"
    script.main(["demo128", "--quick", "--runs", str(runs), "--copy-to", str(out)])
    with open(runs / "demo128" / "results.csv") as f:
        cells = {(r["model"], r["protocol"]) for r in csv.DictReader(f)}
    assert cells == {(m, "epochs") for m in ("neurosql", "vae", "gan", "ddpm")} | {
        (m, "wallclock") for m in ("vae", "gan", "ddpm")} | {(m, "early_stop") for m in ("neurosql", "vae", "gan", "ddpm")}
    copied = {p.relative_to(out / "demo128").as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"results.csv", "results.md", "controls.csv"} <= copied and not any(p.endswith(".pt") for p in copied)
    assert any(p.startswith("cells/") and p.endswith("samples.png") for p in copied)


def test_ddpm_sampling_benchmark_times_every_batch_and_the_images_do_not_depend_on_it(capsys):
    _script("bench_ddpm_sampling").main(["--quick"])
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| 16 px")]
    assert [cells[2].strip() for cells in table] == ["256", "64", "16", "8", "4", "8, channels-last (default)"]
    assert all(float(cells[3]) > 0 and float(cells[5]) < 1e-4 for cells in table)


def test_training_layout_benchmark_times_both_layouts_and_their_losses_agree(capsys):
    _script("bench_training_layout").main(["--quick"])
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if " 16 px " in line]
    assert [cells[0].strip() for cells in table] == ["neurosql-conv-16", "ddpm-conv-16",
                                                     "encoder-autoencoder-16 (batch 128)"]
    # both layouts timed, the channels-last one really laid out, the same training to float rounding
    assert all(float(cells[3]) > 0 and cells[4].strip().isdigit() and float(cells[6]) < 1e-4 for cells in table)


def test_scoring_benchmark_builds_the_scorer_with_an_empty_and_a_filled_audit_cache(capsys):
    _script("bench_scoring").main(["--quick"])
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if "cache:" in line]
    assert [r[0].strip() for r in rows] == ["empty cache: calibrates, writes", "filled cache: reads"]
    assert all(float(r[1]) >= 0 for r in rows) and "Scoring one set of 410 images" in out


def test_image_checks_benchmark_times_the_check_without_and_with_kept_verdicts(capsys):
    _script("bench_image_checks").main(["--quick"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith(("| no kept", "| first", "| next"))][:4]
    assert [r[0].strip() for r in rows] == ["no kept verdicts (as before)",
                                            "first run: decodes all, writes the verdicts",
                                            "next run: nothing changed", "next run: 10 files rewritten"]
    assert all(float(r[1]) >= 0 and r[2].strip() == "320" for r in rows)
    slicing = [line.split("|")[1:-1] for line in lines[lines.index("| slicing | seconds | slices |"):]][3:]
    assert [r[0].strip() for r in slicing] == ["first run: reads every volume, writes the slices",
                                               "next run: nothing changed"]
    assert slicing[0][2] == slicing[1][2] and int(slicing[0][2]) > 0  # the same slices from the kept manifest


def test_feature_space_study_scores_every_space_and_takes_its_margin_over_every_negative_control(tmp_path, capsys,
                                                                                                 monkeypatch):
    from monai_neurosql import metrics
    from monai_neurosql.benchmark import feature_space

    trained = []
    train = metrics.train_domain_encoder
    monkeypatch.setattr(metrics, "train_domain_encoder", lambda *a, **k: trained.append(k) or train(*a, **k))
    npz = write_npz(tmp_path / "tiny.npz", shape=(16, 16), n=(80, 70, 70))
    summary = feature_space.main(["--dataset", str(npz), "--kinds", "autoencoder", "proxy", "--sizes", "60",
                                  "--epochs", "1", "--feature-size", "8", "--threads", "1", "--channels", "8", "8",
                                  "--input-size", "8", "--members", "2", "--output", str(tmp_path / "out")])
    assert [(r["space"], r["n"]) for r in summary] == [("autoencoder", 60), ("proxy", 60)]
    # --channels, --input-size and --members reach the encoder
    assert [(k["kind"], k["channels"], k["input_size"], k["members"]) for k in trained] == [("autoencoder", (8, 8), 8, 2)]
    with open(tmp_path / "out" / "feature_space.csv") as f:
        rows = list(csv.DictReader(f))
    sets = {r["set"] for r in rows}
    assert {"real_unseen", "noise", "mean_image", "blurred", "phase_scrambled", "blur_1"} <= sets
    for row in summary:  # the margin is the smallest paired z-score over the four negative controls, named
        space = {r["set"]: r for r in rows if r["space"] == row["space"]}
        z = {name: float(space[name]["z_floor"]) for name in ("noise", "mean_image", "blurred", "phase_scrambled")}
        assert row["hardest_control"] == min(z, key=z.get) and row["kid_z_min"] == pytest.approx(min(z.values()),
                                                                                                 rel=1e-3)
        for name, value in z.items():  # of the sign of the KID difference, its SE that of the paired difference
            assert value * (float(space[name]["kid"]) - float(space["real_unseen"]["kid"])) > 0
        assert row["structure_z"] == pytest.approx(float(space["phase_scrambled"]["z_mild"]), rel=1e-3)
        assert space["real_unseen"]["z_floor"] == "" and space["noise"]["z_mild"] == ""
    assert "hardest_control" in (tmp_path / "out" / "feature_space.md").read_text()
    assert "blurred_mild" in sets and all("structure_z" in r and "trusted" in r for r in summary)
    assert "Chosen space:" in (tmp_path / "out" / "feature_space.md").read_text()
    saved = metrics.load_domain_encoder(tmp_path / "out" / "encoder_autoencoder.pt")  # kept for reuse
    assert saved.info["kind"] == "autoencoder" and saved.input_size == 8 and len(saved.members) == 2
    assert not (tmp_path / "out" / "encoder_proxy.pt").exists()


def _space_rows(space, n, kid):
    """Hand-made study rows of one space: ``kid`` maps set names to KID (SE 1 each)."""
    return [{"space": space, "n": n, "set": name, "kid": value, "kid_se": 1.0, "fd": 1.0 + value}
            for name, value in kid.items()]


def test_feature_space_margins_trust_a_space_only_when_it_ranks_anatomy_above_texture():
    from monai_neurosql.benchmark import feature_space

    base = {"real_unseen": 0.0, "noise": 50.0, "mean_image": 40.0, "blurred": 60.0, "blur_0.5": 1.0, "blur_1": 2.0,
            "blur_2": 3.0}
    texture_biased = _space_rows("a", 100, {**base, "phase_scrambled": 10.0, "blurred_mild": 30.0})
    shape_biased = _space_rows("b", 100, {**base, "phase_scrambled": 30.0, "blurred_mild": 10.0})
    wider = _space_rows("c", 100, {**base, "phase_scrambled": 45.0, "blurred_mild": 5.0})
    small_n = _space_rows("c", 10, {**base, "phase_scrambled": 45.0, "blurred_mild": 5.0, "noise": 1.0})
    summary = {(r["space"], r["n"]): r for r in feature_space.margins(texture_biased + shape_biased + wider + small_n)}
    a, b, c = summary["a", 100], summary["b", 100], summary["c", 100]
    # every negative control is resolved in all three, but only b and c rank the blurred anatomy above the texture
    assert a["ordered"] and a["kid_z_min"] > 3 and a["blur_rank"] == pytest.approx(1.0)
    assert a["structure_z"] == pytest.approx((10.0 - 30.0) / math.sqrt(2)) and not a["trusted"]
    assert b["trusted"] and c["trusted"]
    assert not summary["c", 10]["trusted"]  # noise unresolved there
    assert feature_space.choose_space(list(summary.values())) is c  # the widest margin at the largest n
    assert feature_space.choose_space([a]) is None
    # a row scored with the paired SE is read as it is; the quadrature SE only for tables written before it
    paired = _space_rows("d", 100, {**base, "phase_scrambled": 30.0, "blurred_mild": 10.0})
    for row in paired:
        row.update({"z_floor": 7.0 if row["set"] == "noise" else 99.0} if row["set"] != "real_unseen" else {})
        row.update({"z_mild": 12.0} if row["set"] == "phase_scrambled" else {})
    d = feature_space.margins(paired)[0]
    assert (d["kid_z_min"], d["hardest_control"], d["structure_z"], d["blur1_z"]) == (7.0, "noise", 12.0, 99.0)


def test_encoder_seed_selection_scores_each_seed_on_both_splits_and_keeps_the_best_validation_margin(tmp_path):
    npz = write_npz(tmp_path / "tiny.npz", shape=(40, 40), n=(48, 40, 60))
    rows = _script("encoder_seed_selection").main(["--dataset", str(npz), "--image-size", "40", "--seeds", "0", "1", "2",
                                                   "3", "--epochs", "1", "--threads", "1", "--output",
                                                   str(tmp_path / "out")])
    assert [r["seed"] for r in rows] == [0, 1, 2, 3] and [r["group"] for r in rows] == [0, 0, 0, 3]
    assert all(math.isfinite(r[k]) for r in rows for k in ("validation_z", "test_z", "test_z_other_draw"))
    first = rows[:3]
    assert [r["kept"] for r in first] == [r["validation_z"] == max(x["validation_z"] for x in first) for r in first]
    assert rows[3]["kept"]  # a group of one
    assert "| 0-2 |" in (tmp_path / "out" / "encoder_seed_selection.md").read_text()
    with open(tmp_path / "out" / "encoder_seed_selection.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_paired_backbones_pairs_each_neurosql_setting_with_the_reference_of_its_seed():
    script = _script("paired_backbones")
    rows = [{"dataset": "d", "model": m, "backbone": b, "latent_size": z, "seed": s, "protocol": "epochs",
             "variant": "default", "conditional": "False", "cell_dir": f"{m}{b}{z}{s}"}
            for m, b, z, s in [("neurosql", "conv", "16", "0"), ("neurosql", "film_unet", "16", "0"),
                               ("neurosql", "conv", "4", "0"), ("neurosql", "film_unet", "16", "1"),
                               ("vae", "film_unet", "16", "0")]]
    pairs = script.backbone_pairs(rows, "conv", "16")
    assert [(a["cell_dir"], b["cell_dir"]) for a, b in pairs] == [("neurosqlconv160", "neurosqlfilm_unet160"),
                                                                  ("neurosqlconv160", "neurosqlconv40")]
    # relabelled into the reference's group, named by their setting; the rows themselves untouched
    assert [(b["model"], b["backbone"], b["latent_size"]) for _, b in pairs] == [("film_unet_z16", "conv", "16"),
                                                                                ("conv_z4", "conv", "16")]
    assert rows[1]["model"] == "neurosql" and rows[1]["backbone"] == "film_unet"


@pytest.mark.slow
def test_paired_backbones_scores_a_finished_run_in_every_space(tmp_path):
    from monai_neurosql import benchmark

    npz = write_npz(tmp_path / "tiny.npz", shape=(16, 16), n=(48, 40, 60))
    out = tmp_path / "run"
    benchmark.main(["--dataset", str(npz), "--models", "neurosql", "--backbones", "conv", "film_unet", "--latent-sizes",
                    "2", "--seeds", "0", "--epochs", "1", "--batch-size", "16", "--num-samples", "60", "--threads",
                    "1", "--encoder-epochs", "1", "--audit-samples", "60", "--output", str(out)])
    paired = _script("paired_backbones").main(["--dataset", str(npz), "--output", str(out), "--reference", "conv", "2"])
    # the headline space (contrastive at 16 px) and the cross-check spaces of the run, one row each
    assert sorted(r["space"] for r in paired) == ["autoencoder", "classifier", "domain"]
    assert all(r["b"] == "film_unet_z2/default/epochs" and float(r["se"]) > 0 for r in paired)
    with open(out / "paired_backbones.csv") as f:
        assert len(list(csv.DictReader(f))) == len(paired)
    with pytest.raises(SystemExit, match="no NeuroSQL row"):
        _script("paired_backbones").main(["--dataset", str(npz), "--output", str(out), "--reference", "resnet", "2"])


def test_paired_backbones_takes_the_reference_of_one_protocol_against_every_protocol():
    script = _script("paired_backbones")
    rows = [{"dataset": "d", "model": "neurosql", "backbone": b, "latent_size": "16", "seed": "0", "protocol": p,
             "variant": "default", "conditional": "False", "cell_dir": f"{b}{p}"}
            for b, p in [("conv", "epochs"), ("conv", "wallclock"), ("film_unet", "epochs")]]
    assert [(a["cell_dir"], b["cell_dir"]) for a, b in script.backbone_pairs(rows, "conv", "16")] == [
        ("convepochs", "film_unetepochs")]  # each protocol with its own
    pairs = script.backbone_pairs(rows, "conv", "16", protocol="wallclock")
    assert [(a["cell_dir"], b["cell_dir"]) for a, b in pairs] == [("convwallclock", "convepochs"),
                                                                  ("convwallclock", "film_unetepochs")]
