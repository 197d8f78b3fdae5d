"""The paper's comparison in one command: NeuroSQL vs VAE, GAN and DDPM on the same backbone, under one protocol,
scored in a feature space learnt from the data set's own training images, beside controls that show whether each
metric can tell good from bad.

Usage::

    python -m monai_neurosql.benchmark --dataset fashion-mnist --models neurosql vae gan ddpm \\
        --latent-sizes 4 16 32 --seeds 0 1 2 --protocol epochs --epochs 20 --output runs/bench_fmnist

``--dataset``: ``fashion-mnist`` (Debian's dataset-fashion-mnist), ``demo`` (the embedded MNI152-based brain slices;
``--demo-scale 8`` for enough held-out slices), a MedMNIST-layout ``.npz``, or an OASIS folder (Kaggle slices, or
OASIS-1 volumes with ``--csv-path``). Every output goes under ``--output``, whatever the data set path. The
transformed images are kept in ``tensor_cache/`` there, so the run's child processes transform them once (a changed
image file, another size or another draw gives a new cache file; delete the folder to reclaim its space).

Steps, each resumable (an interrupted sweep redoes nothing finished, and a cell cut mid-training continues from
its ``resume.pt``, written about every ``--resume-every`` seconds, to the same result):

1. ``domain_encoder.pt``: the domain feature encoder, trained once on the real training split only
   (``--encoder-kind``; ``auto``: an autoencoder on the images resized to 32 px above 32 px, contrastive at 28-32 px
   and in 3D), shared by every model and control; ``domain_encoder_<kind>.pt`` for each ``--cross-spaces`` kind
   (default: classifier, autoencoder and contrastive, at the images' full size), in which KID is scored as a second
   opinion (``kid_<kind>``): encoders trained for different tasks weigh blur and artefacts differently.
2. ``controls.csv``: the control sets (unseen real images, copies of training images, Gaussian noise, the mean
   training image, blurred training images, phase-scrambled training images) scored like a model.
3. ``vae_beta_selection.json``: with several ``--vae-betas``, the VAE's KL weight chosen by validation KID (the grid
   extended beyond its edge, up to 3 values, while the best lies on it).
4. ``results.csv``: one row per cell (dataset x model x backbone x latent size x seed x variant x protocol), each
   trained in its own process; its checkpoint and scored samples under ``cells/<cell>/``.
5. ``results.md``: mean ± std over seeds with the controls, the settings, and every metric that ranks a negative
   control at or better than a trained model; ``comparison_*.png`` sample pictures; ``paired.csv`` and its table:
   NeuroSQL against every other model of the same seed, the KID difference with its own SE
   (:mod:`monai_neurosql.benchmark.paired`).

``--rescore`` scores the controls and every finished cell's saved samples again with the current metrics (no
retraining), e.g. after a metric changed. ``--pair A B`` compares any two settings of the output's
``results.csv`` the same way as ``paired.csv`` compares NeuroSQL with the others, seed by seed in every feature
space, without training (``model/variant/protocol`` names, e.g. ``--pair ddpm/ema/epochs ddpm/default/epochs``;
``paired_<A>_vs_<B>.csv``).

Protocols (``--protocol``): ``epochs`` (the paper's: ``--epochs`` for every model), ``wallclock``
(``--wallclock-seconds`` of training each, or ``auto``: NeuroSQL's mean training time in this output's
``epochs`` rows), ``early_stop`` (each model's best validation KID, evaluated every ``--eval-every`` epochs,
``--patience`` evaluations, at most ``--max-epochs``).

Length: the command line and the orchestration of the cells (each run in a child process, resumable,
rescoring); the per-cell work is in ``cells.py``, the tables in ``tables.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..utils import atomic_write, read_csv, write_csv
from .cells import BACKBONES, DEFAULT_VARIANTS, MODELS, PROTOCOLS, VARIANTS, cell_dir, cell_key, cross_encoder_path

__all__ = ["FIELDS", "main", "with_options"]

FIELDS = [
    "dataset", "model", "backbone", "latent_size", "seed", "variant", "conditional", "protocol", "epochs_run",
    "best_epoch", "n_train", "params", "train_seconds", "sec_per_epoch", "sample_seconds", "peak_rss_mb",
    "num_scored", "domain_fid", "kid", "kid_se", "kid_classifier", "kid_classifier_se", "kid_autoencoder",
    "kid_autoencoder_se", "kid_contrastive", "kid_contrastive_se", "precision", "recall", "density", "coverage",
    "proxy_fid", "ms_ssim", "ssim_random_pairs", "near_copy_share", "share_pixel", "share_lowpass_fine",
    "share_lowpass_coarse", "share_domain", "fid", "fd_imagenet_inception", "fd_radimagenet", "fd_medicalnet",
    "lpips", "assign_seconds", "assign_cost_seconds", "assign_solve_seconds", "assign_decode_seconds", "assignments",
    "clf_accuracy", "clf_macro_precision", "clf_macro_recall", "real_only_accuracy", "real_plus_synthetic_accuracy",
    "vae_beta", "cell_dir",
]


def _load(data_args: tuple):
    from .data import load_benchmark_data

    return load_benchmark_data(*data_args[:4], csv_path=data_args[4], demo_scale=data_args[5])


def _child(target: Callable, data_args: tuple, args: tuple, queue) -> None:
    # the parent loaded the same data first and logged its warnings (class mix); a child's reload stays quiet, and
    # the child's own progress lines (epochs, validation KIDs) reach the same stream as the parent's
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("monai_neurosql.benchmark.data").setLevel(logging.ERROR)
    try:
        queue.put(("ok", target(_load(data_args), *args)))
    except Exception as err:  # noqa: BLE001 - reported by the parent with what failed
        import traceback

        queue.put(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def _in_child(target: Callable, data_args: tuple, *args, what: str) -> Any:
    """``target(data, *args)`` in a fresh spawned process (peak memory and threads per cell)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, data_args, args, queue))
    proc.start()
    status, payload = queue.get()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{what} failed:\n{payload}")
    return payload


def _train_encoder(data: dict, settings: dict, kind: str, path: str) -> dict:
    from ..metrics import save_domain_encoder, train_domain_encoder

    torch.set_num_threads(int(settings["threads"]))
    encoder = train_domain_encoder(data["train_images"], data["train_labels"], kind=kind,
                                   epochs=int(settings["encoder_epochs"]), seed=0, validation=data["unseen_images"])
    save_domain_encoder(encoder, path)
    return dict(encoder.info)


def _controls(data: dict, settings: dict) -> list[dict]:
    from .cells import score_controls

    torch.set_num_threads(int(settings["threads"]))
    return score_controls(data, settings)


def _cell(data: dict, cell: dict, settings: dict) -> dict:
    from .cells import run_cell

    return run_cell(cell, data, settings)


def _cross_spaces(kinds: Sequence[str], encoder, data: dict) -> list[str]:
    """The cross-check kinds that apply: not the domain encoder's own space (its kind at full size; an encoder that
    sees resized images is another space), ``classifier`` only with 2+ classes."""
    from ..metrics import DOMAIN_ENCODER_KINDS

    unknown = set(kinds) - set(DOMAIN_ENCODER_KINDS)
    if unknown:
        raise ValueError(f"unknown --cross-spaces {sorted(unknown)}; known: {DOMAIN_ENCODER_KINDS}.")
    headline = encoder.info.get("kind") if encoder.input_size is None else None
    classes = int(torch.as_tensor(data["train_labels"]).unique().numel())
    return [k for k in dict.fromkeys(kinds) if k != headline and (k != "classifier" or classes >= 2)]


def _rescore(data: dict, rows: list[dict], settings: dict) -> list[dict]:
    from .cells import rescore_rows

    return rescore_rows(rows, data, settings)


def _vae_selection(data: dict, cell: dict, settings: dict, beta: float) -> float:
    from .cells import select_vae_beta

    return select_vae_beta(cell, data, settings, beta)


#: at most this many KL weights beyond the edge of ``--vae-betas`` when the best one lies on it
MAX_BETA_EXTENSIONS = 3


def _select_beta(path: Path, group: str, betas: Sequence[float], score: Callable[[float], float],
                 criterion: str, max_extensions: int = MAX_BETA_EXTENSIONS) -> float:
    """The VAE's KL weight for ``group``: the one with the lowest ``score`` (validation KID), kept in the JSON file
    ``path`` with every score. Each score is written as soon as it is known, so a selection cut by a kill
    continues with the next beta; a group whose best beta is known is reused without training.

    The grid is ``betas``, extended while the best lies on its edge: the next value beyond it (the edge times the
    grid's ratio there, e.g. 0.02 -> 0.08 after 0.005, 0.02) is tried, at most ``max_extensions`` of them, so that
    a minimum at the grid's edge is not taken for the best the VAE can do (at 128 px the demo brains chose the
    largest of 0.001, 0.005, 0.02)."""
    selection = json.loads(path.read_text()) if path.is_file() else {}
    entry = selection.setdefault(group, {"kid_by_beta": {}})
    kids = entry["kid_by_beta"]

    def save() -> None:
        with atomic_write(path) as partial:
            partial.write_text(json.dumps(selection, indent=1))

    def scored(beta: float) -> None:
        if str(beta) not in kids:
            kids[str(beta)] = float(score(beta))
            save()

    for beta in betas:
        scored(float(beta))
    requested, log = {str(float(b)) for b in betas}, logging.getLogger("monai_neurosql.benchmark")
    while True:
        grid = sorted(float(b) for b in kids)
        best = min(grid, key=lambda b: kids[str(b)])
        edge = grid.index(best) in (0, len(grid) - 1)
        extensions = [b for b in kids if b not in requested]
        if len(grid) < 2 or not edge:
            break
        if len(extensions) >= max_extensions:
            log.warning(
                f"VAE KL weight: the best, {best}, is still on the edge of the {len(grid)} tried after "
                f"{max_extensions} beyond --vae-betas; widen --vae-betas to look further.")
            break
        low = grid.index(best) == 0
        beyond = float(f"{(best / (grid[1] / grid[0])) if low else (best * grid[-1] / grid[-2]):.3g}")
        log.info(
            f"VAE KL weight: the best so far, {best}, is the {'smallest' if low else 'largest'} tried; "
            f"trying {beyond} ({len(extensions) + 1} of at most {max_extensions} beyond --vae-betas)")
        scored(beyond)
    if entry.get("chosen") != best or "criterion" not in entry:
        entry.update(chosen=best, criterion=criterion)
        save()
    return float(entry["chosen"])


def _weights(settings: dict) -> None:
    """Weights files found in the torch hub cache fill the options left empty."""
    from ..metrics import (
        FID_INCEPTION_WEIGHTS,
        IMAGENET_INCEPTION_WEIGHTS,
        MEDICALNET_WEIGHTS,
        RADIMAGENET_WEIGHTS,
        VGG16_WEIGHTS,
    )
    from ..metrics.features import hub_checkpoint_path

    for key, filename, subdir in (("fid_weights", FID_INCEPTION_WEIGHTS, "checkpoints"),
                                  ("imagenet_inception_weights", IMAGENET_INCEPTION_WEIGHTS, "checkpoints"),
                                  ("radimagenet_weights", RADIMAGENET_WEIGHTS, "checkpoints"),
                                  ("medicalnet_weights", MEDICALNET_WEIGHTS, "medicalnet"),
                                  ("lpips_weights", VGG16_WEIGHTS, "checkpoints")):
        if settings.get(key):
            if not Path(settings[key]).expanduser().is_file():
                raise FileNotFoundError(f"--{key.replace('_', '-')} {settings[key]!r} does not exist.")
        elif hub_checkpoint_path(filename, subdir).is_file():
            settings[key] = str(hub_checkpoint_path(filename, subdir))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m monai_neurosql.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--dataset", default="fashion-mnist")
    add("--csv-path", default=None, help="OASIS cross-sectional CSV, for OASIS-1 volume folders")
    add("--demo-scale", type=int, default=1, help="demo subjects per class x this (8: 2560 slices)")
    add("--models", nargs="+", default=list(MODELS), choices=MODELS)
    add("--backbones", nargs="+", default=["conv"], choices=BACKBONES)
    add("--latent-sizes", nargs="+", type=int, default=[16])
    add("--seeds", nargs="+", type=int, default=[0])
    add("--variants", nargs="+", default=None,
        help="variants where a model has them: neurosql default paper (SSIM+L1 assignment cost) l2 adaptive greedy "
             "minibatch; gan default hinge; ddpm ema (sampled from the moving average of its weights) default (its "
             "raw weights). A model none of whose variants is named runs its own default: 'ema' for the DDPM, "
             "'default' for the others")
    add("--protocol", default="epochs", choices=PROTOCOLS)
    add("--epochs", type=int, default=20, help="epochs of the 'epochs' protocol (and of the VAE beta selection)")
    add("--wallclock-seconds", default=None, help="training seconds per cell ('wallclock'), or 'auto'")
    add("--max-epochs", type=int, default=120, help="epoch cap of 'wallclock' and 'early_stop'")
    add("--eval-every", type=int, default=2, help="'early_stop': epochs between validation KIDs")
    add("--patience", type=int, default=5, help="'early_stop': evaluations without improvement before stopping")
    add("--val-samples", type=int, default=512, help="samples per validation KID (early stopping, VAE beta)")
    add("--batch-size", type=int, default=64)
    add("--max-train", type=int, default=2000)
    add("--image-size", type=int, default=None, help="resize (default: native; 64 for OASIS and the demo)")
    add("--num-samples", type=int, default=2048, help="generated = real test images per metric (matched)")
    add("--audit-samples", type=int, default=1024, help="images per set in the memorization audit")
    add("--conditional", action="store_true", help="class-conditional models")
    add("--classifier", action="store_true", help="Table 2's synthetic-only classifier (implies --conditional)")
    add("--num-synthetic", type=int, default=10000)
    add("--classifier-epochs", type=int, default=10)
    add("--vae-betas", nargs="+", type=float, default=[0.0001, 0.001, 0.005, 0.02, 0.1],
        help="KL weights tried on the validation split (one value: no selection)")
    add("--ddpm-timesteps", type=int, default=1000)
    add("--ddpm-sampling-steps", type=int, default=100)
    add("--encoder-kind", default="auto",
        help="domain encoder: auto (by image size, metrics.auto_encoder_settings), classifier, autoencoder, "
             "contrastive")
    add("--encoder-epochs", type=int, default=15)
    add("--domain-encoder", default=None, help="an existing domain_encoder.pt to reuse instead of training one")
    add("--cross-spaces", nargs="*", default=["classifier", "autoencoder", "contrastive"],
        help="other encoder kinds, trained on the same images at their full size, in which KID is scored as a second "
             "opinion (the domain encoder's own space is skipped; 'classifier' needs 2+ classes); none: no "
             "cross-check")
    add("--fid-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth (else the torch hub cache)")
    add("--imagenet-inception-weights", default=None, help="torchvision inception_v3_google-0cc3c7bd.pth")
    add("--radimagenet-weights", default=None, help="RadImageNet-ResNet50_notop.pth")
    add("--medicalnet-weights", default=None, help="MedicalNet resnet_10_23dataset.pth")
    add("--lpips-weights", default=None, help="torchvision vgg16-397923af.pth")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--threads", type=int, default=torch.get_num_threads())
    add("--pair", nargs=2, metavar=("A", "B"), default=None,
        help="compare two settings of this output's results.csv seed by seed instead of training, named "
             "model/variant/protocol (e.g. ddpm/ema/epochs ddpm/default/epochs): their paired KID difference in "
             "every feature space, written to paired_<A>_vs_<B>.csv")
    add("--rescore", action="store_true",
        help="score the controls and every finished cell's saved samples again with the current metrics, then report")
    add("--resume-every", type=float, default=60.0,
        help="seconds between a training cell's resume checkpoints (cells/<cell>/resume.pt, written at an epoch "
             "end; removed when the cell is recorded); 0: every epoch")
    add("--output", default="runs/benchmark")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("monai_neurosql.benchmark")
    unknown = set(args.variants or ()) - {v for vs in VARIANTS.values() for v in vs}
    if unknown:
        raise ValueError(f"unknown --variants {sorted(unknown)}; known: {VARIANTS}.")
    if args.protocol == "wallclock" and not args.wallclock_seconds:
        raise ValueError("--protocol wallclock needs --wallclock-seconds (seconds, or 'auto' for NeuroSQL's mean "
                         "training time in this output's 'epochs' rows).")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    conditional = args.conditional or args.classifier
    encoder_path = Path(args.domain_encoder) if args.domain_encoder else output / "domain_encoder.pt"
    settings: dict[str, Any] = {
        "epochs": args.epochs, "max_epochs": args.max_epochs, "eval_every": args.eval_every, "patience": args.patience,
        "val_samples": args.val_samples, "batch_size": args.batch_size, "num_samples": args.num_samples,
        "audit_samples": args.audit_samples, "device": args.device, "threads": args.threads, "output": str(output),
        "classifier": args.classifier, "num_synthetic": args.num_synthetic,
        "classifier_epochs": args.classifier_epochs, "ddpm_timesteps": args.ddpm_timesteps,
        "ddpm_sampling_steps": args.ddpm_sampling_steps, "encoder_kind": args.encoder_kind,
        "encoder_epochs": args.encoder_epochs, "encoder_path": str(encoder_path),
        "fid_weights": args.fid_weights, "imagenet_inception_weights": args.imagenet_inception_weights,
        "radimagenet_weights": args.radimagenet_weights, "medicalnet_weights": args.medicalnet_weights,
        "lpips_weights": args.lpips_weights, "resume_every": args.resume_every,
    }
    _weights(settings)
    data_args = (args.dataset, args.image_size, args.max_train, output, args.csv_path, args.demo_scale)
    data = _load(data_args)  # fails early on a missing data set; children reload it (cached files)
    name = data["name"]
    from ..metrics import auto_mismatch, load_domain_encoder

    if args.pair:  # scores finished cells: trains nothing
        settings["cross_spaces"] = (_cross_spaces(args.cross_spaces, load_domain_encoder(encoder_path), data)
                                    if encoder_path.is_file() else [])
        return _pair(data, args.pair, settings)
    reused = encoder_path.is_file()
    if not reused:
        info = _in_child(_train_encoder, data_args, settings, args.encoder_kind, str(encoder_path),
                         what="training the domain encoder")
        log.info(f"domain encoder: {info}")
    encoder = load_domain_encoder(encoder_path)  # once, for the checks below (the cells load it in their children)
    if reused and args.encoder_kind == "auto":  # reused as it is (every cell of a run in one space); say if stale
        stale = auto_mismatch(encoder, data["train_images"].shape, where=str(encoder_path))
        if stale:
            log.warning(stale)
    settings["cross_spaces"] = _cross_spaces(args.cross_spaces, encoder, data)
    for kind in settings["cross_spaces"]:
        path = cross_encoder_path(settings, kind)
        if not path.is_file():
            info = _in_child(_train_encoder, data_args, settings, kind, str(path),
                             what=f"training the {kind} cross-check encoder")
            log.info(f"cross-check encoder: {info}")
    controls_csv = output / "controls.csv"
    if args.rescore:
        controls_csv.unlink(missing_ok=True)
        if (output / "results.csv").is_file():
            rescored = _in_child(_rescore, data_args, read_csv(output / "results.csv"), settings,
                                 what="re-scoring the cells")
            write_csv(output / "results.csv", rescored, FIELDS)
    if not controls_csv.is_file():
        write_csv(controls_csv, _in_child(_controls, data_args, settings, what="scoring the controls"), FIELDS)
    controls = read_csv(controls_csv)

    cells = plan_cells(args, name, conditional)
    csv_path = output / "results.csv"
    rows = read_csv(csv_path)
    done = {cell_key(r) for r in rows}
    todo = [c for c in cells if cell_key(c) not in done]
    cut = sum((cell_dir(output, c) / "resume.pt").is_file() for c in todo)
    log.info(f"{len(cells)} cells, {len(cells) - len(todo)} already in {csv_path}, {len(todo)} to run"
             + (f" ({cut} continuing from their resume.pt)" if cut else ""))

    if args.protocol == "wallclock" and args.wallclock_seconds == "auto":
        times = [float(r["train_seconds"]) for r in rows if r["model"] == "neurosql" and r["protocol"] == "epochs"
                 and r["variant"] == "default"]
        if not times:
            raise ValueError("--wallclock-seconds auto needs NeuroSQL 'epochs' rows in this output; run the "
                             "'epochs' protocol first or give seconds.")
        args.wallclock_seconds = sum(times) / len(times)
    settings["wallclock_seconds"] = float(args.wallclock_seconds or 0)
    for cell in todo:
        cell_settings = dict(settings)
        if cell["model"] == "vae":
            group = f"{cell['backbone']}|{cell['latent_size']}|{conditional}|{args.epochs}"
            if len(args.vae_betas) > 1:
                cell_settings["vae_beta"] = _select_beta(
                    output / "vae_beta_selection.json", group, args.vae_betas,
                    lambda b, cell=cell: _in_child(_vae_selection, data_args, {**cell, "seed": 0}, settings, b,
                                                   what=f"VAE beta {b}"),
                    criterion=f"validation KID, {args.val_samples} samples, seed 0, {args.epochs} epochs")
            else:
                cell_settings["vae_beta"] = args.vae_betas[0]
        log.info(f"cell {cell_key(cell)}")
        row = _in_child(_cell, data_args, cell, cell_settings, what=f"benchmark cell {cell_key(cell)}")
        row["vae_beta"] = cell_settings.get("vae_beta", "")
        rows.append(row)
        write_csv(csv_path, [row], FIELDS, append=True)
        (cell_dir(output, cell) / "resume.pt").unlink(missing_ok=True)  # recorded: its training is not continued
    _report(rows, controls, data, settings, args, output)
    return rows


def _pair(data: dict, names: Sequence[str], settings: dict) -> list[dict]:
    """``--pair A B``: the paired KID rows of every seed holding both settings, written beside results.csv."""
    from .cells import load_space_encoders
    from .paired import PAIRED_FIELDS, named_pairs, paired_kid_rows, paired_table

    output = Path(settings["output"])
    rows = read_csv(output / "results.csv")
    if not rows:
        raise FileNotFoundError(f"--pair compares finished cells, and {str(output / 'results.csv')!r} holds none: "
                                "run the cells into this --output first.")
    a, b = names
    pairs = named_pairs(rows, a, b)  # names checked before any encoder is loaded
    if not Path(settings["encoder_path"]).is_file():
        raise FileNotFoundError(f"{settings['encoder_path']!r} not found: --pair scores in the run's own domain "
                                "encoder; pass the --output the cells were run into (or --domain-encoder).")
    paired = paired_kid_rows(rows, data["reference_images"], load_space_encoders(settings), pairs)
    path = output / f"paired_{a.replace('/', '_')}_vs_{b.replace('/', '_')}.csv"
    write_csv(path, paired, PAIRED_FIELDS)
    print(f"Paired KID differences ({path}): a = {a}, b = {b}, scored against the same test images; "
          "'a closer' is a difference below -2 of its own SE.\n\n" + paired_table(paired))
    return paired


def with_options(argv: Sequence[str], replace: dict[str, str], first_only: Sequence[str] = (),
                 drop: Sequence[str] = ()) -> list[str]:
    """``argv`` (options, each followed by its values) with every option of ``replace`` given that one value (those
    ``argv`` lacks appended), every option of ``first_only`` cut to its first value and those of ``drop`` removed:
    a documented command rerun at other sizes (the docs' tests, ``benchmarks/issue12_gpu.py --quick``)."""
    replace = dict(replace)
    out: list[str] = []
    i = 0
    while i < len(argv):
        token, values = argv[i], []
        i += 1
        while i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if token in replace:
            values = [replace.pop(token)]
        elif token in first_only:
            values = values[:1]
        if token not in drop:
            out += [token, *values]
    return out + [item for token, value in replace.items() for item in (token, value)]


def plan_cells(args: argparse.Namespace, name: str, conditional: bool) -> list[dict]:
    """The cells of a command line: backbone x latent size x model x variant x seed under its protocol (the DDPM,
    which has no latent size, once per backbone; a model none of whose variants ``--variants`` names runs its
    :data:`~monai_neurosql.benchmark.cells.DEFAULT_VARIANTS` entry); a cell named twice runs once."""
    cells = []
    for backbone in args.backbones:
        for latent in args.latent_sizes:
            for model in args.models:
                if model == "ddpm" and latent != args.latent_sizes[0]:
                    continue  # a diffusion model has no latent size: one set of runs per backbone
                named = [v for v in args.variants or () if v in VARIANTS[model]]
                for variant in named or [DEFAULT_VARIANTS[model]]:
                    for seed in args.seeds:
                        cells.append({"dataset": name, "model": model, "backbone": backbone, "latent_size": latent,
                                      "seed": seed, "variant": variant, "conditional": conditional,
                                      "protocol": args.protocol})
    return list({cell_key(c): c for c in cells}.values())


def _structure_note(info: dict) -> str:
    """How the domain encoder's seed was chosen, for results.md ('' when it was not)."""
    if int(info.get("candidates", 1)) <= 1 or "structure_z" not in info:
        return ""
    margins = ", ".join(f"{m:.1f}" for m in info.get("candidate_structure_z", []))
    return (f"; seed {info.get('seed')} kept of {info['candidates']} candidates by the structure test on the "
            f"validation split (phase-scrambled vs mildly blurred real images, KID z: {margins}; "
            "metrics.structure_margin)")


def _structure_warning(info: dict) -> list[str]:
    """A warning line when the kept encoder does not resolve anatomy before texture (structure margin <= 3)."""
    from ..metrics import structure_warning

    warning = structure_warning(info)
    return [f"**Warning:** {warning[0].upper()}{warning[1:]}"] if warning else []


def _report(rows: list[dict], controls: list[dict], data: dict, settings: dict, args: argparse.Namespace,
            output: Path) -> None:
    from ..metrics import MIN_SAMPLES
    from .cells import DDPM_EMA_DECAY, LEARNING_RATES, load_space_encoders, scored_count
    from .paired import PAIRED_FIELDS, paired_kid_rows, paired_table
    from .tables import comparison_grids, control_report, summarize

    encoders = load_space_encoders(settings)
    info = encoders["domain"].info
    num = scored_count(args.num_samples, data)
    flags = control_report(rows, controls)
    text = [
        (f"Data: {data['name']}: {len(data['train_images'])} training images, {len(data['unseen_images'])} validation "
        f"(unseen real control, selection), {len(data['reference_images'])} test (reference); {num} generated vs "
        f"{num} test images per metric."),
        *([f"**Warning:** {data['class_mix_shift']}"] if data["class_mix_shift"] else []),
        (f"Protocol: {args.protocol}; epochs {args.epochs} (epochs), cap {args.max_epochs} (wallclock/early_stop), "
        f"wall-clock {settings.get('wallclock_seconds') or '-'} s, early stop every {args.eval_every} epochs with "
        f"patience {args.patience} on validation KID ({args.val_samples} samples)."),
        (f"Optimizers: learning rates {LEARNING_RATES}; NeuroSQL and VAE AdamW + cosine + clipping 1.0; GAN DCGAN "
        "(Adam betas (0.5, 0.999), N(0, 0.02) init, no clipping; 'hinge' = hinge loss + spectral norm); DDPM Adam, "
        f"T = {args.ddpm_timesteps}, {args.ddpm_sampling_steps} sampling steps (variant 'ema', its default: sampled "
        f"from the weights' moving average, decay {DDPM_EMA_DECAY} with warm-up; 'default': its raw weights)."),
        (f"Domain features: {info.get('kind')} encoder"
         + (f" on the images resized to {encoders['domain'].input_size} px" if encoders["domain"].input_size else "")
         + f", {info.get('epochs')} epochs on {info.get('num_images')} real "
        f"training images ({settings['encoder_path']}){_structure_note(info)}. Minimum counts: {MIN_SAMPLES} "
         "(domain-FID: 4 x feature size)."),
        *_structure_warning(info),
        "",
        summarize(rows, controls),
        "",
        "Control check: " + ("every metric ranks every negative control worse than every trained model and the "
                             "unseen-real floor." if not flags else f"{len(flags)} order violations:"),
        *[f"- {line}" for line in flags],
    ]
    paired = paired_kid_rows(rows, data["reference_images"], encoders)
    if paired:
        write_csv(output / "paired.csv", paired, PAIRED_FIELDS)
        text += ["", ("Paired KID differences (`paired.csv`): NeuroSQL (a) against each other model (b) of the same "
                 "seed, scored against the same test images; the SE is that of the difference, so 'a closer' "
                 "(difference below -2 SE) is resolved evidence for that seed."), "", paired_table(paired)]
    (output / "results.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    if rows:
        comparison_grids(rows, data["reference_images"], output)
