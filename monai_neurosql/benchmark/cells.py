"""One benchmark cell: build a model on the shared backbone, train it under a protocol, keep its checkpoint and
samples, and score the samples in the shared feature spaces.

Length: one builder per model kind (NeuroSQL variants, VAE, GAN, DDPM), the three protocols and the scoring of a
cell share the cell's state and are read together when a cell's result is questioned; what makes a cell continue
after a kill is in ``resume.py``; splitting the protocols and the scoring into modules of their own is the next step
if it grows.
"""

from __future__ import annotations

import copy
import logging
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_write
from .memory import peak_rss_mib
from .resume import CellConfig, RandomState, TrainClock, resumable

__all__ = [
    "BACKBONES",
    "DEFAULT_VARIANTS",
    "LEARNING_RATES",
    "MODELS",
    "PROTOCOLS",
    "VARIANTS",
    "build_generator",
    "build_model",
    "cell_dir",
    "cell_key",
    "run_cell",
    "score_controls",
    "scored_count",
    "select_vae_beta",
]

MODELS = ("neurosql", "vae", "gan", "ddpm")
BACKBONES = ("conv", "resnet", "film_unet")
#: NeuroSQL's variants as :class:`~monai_neurosql.handlers.QuantileAssignmentHandler` arguments on top of the package
#: defaults (assignment every 2 epochs): ``default`` the package's defaults (``"l2"`` assignment cost), ``paper`` the
#: paper's SSIM+L1 assignment cost, ``l2`` the L2 cost named explicitly, ``adaptive`` the adaptive schedule of the
#: bundles (``min_moved=0.05``), ``greedy`` the greedy solver (Algorithm 3), ``minibatch`` Algorithm 2.
NEUROSQL_VARIANTS = {
    "default": {}, "paper": {"settings": {"cost": "ssim_l1"}}, "l2": {"settings": {"cost": "l2"}},
    "adaptive": {"min_moved": 0.05, "max_every_n_epochs": 8}, "greedy": {"settings": {"method": "greedy"}},
    "minibatch": {"mode": "minibatch"},
}
#: Variants per model: NeuroSQL's (:data:`NEUROSQL_VARIANTS`); the GAN's hinge + spectral norm; the DDPM sampled
#: from an exponential moving average of its weights (``ema``: decay :data:`DDPM_EMA_DECAY` with warm-up).
VARIANTS = {"neurosql": tuple(NEUROSQL_VARIANTS), "gan": ("default", "hinge"), "vae": ("default",),
            "ddpm": ("default", "ema")}
#: The variant a model runs when ``--variants`` names none of its own: the DDPM samples from the moving average of
#: its weights, as diffusion implementations do (measured closer than its raw weights on the MedMNIST-layout brains
#: and Fashion-MNIST, docs/benchmarks.md); its raw weights are its variant named ``default``.
DEFAULT_VARIANTS = {"neurosql": "default", "vae": "default", "gan": "default", "ddpm": "ema"}
#: the DDPM ``ema`` variant's decay: 0.999, the value short diffusion runs use (Ho et al.'s 0.9999 averages over
#: more steps than a CPU-sized run takes); the warm-up makes it follow the early weights closely
DDPM_EMA_DECAY = 0.999
#: ``epochs``: the same epochs for every model (the paper's protocol); ``wallclock``: the same training seconds;
#: ``early_stop``: each model at its best validation KID (domain features) within an epoch cap.
PROTOCOLS = ("epochs", "wallclock", "early_stop")
#: Learning rates as each model's community sets them: NeuroSQL and the VAE AdamW 2e-3 with cosine decay (the
#: paper's shared recipe), the GAN DCGAN's Adam 2e-4 with betas (0.5, 0.999), the DDPM Adam 1e-3 (a small
#: U-Net; constant, as Ho et al.).
LEARNING_RATES = {"neurosql": 2e-3, "vae": 2e-3, "gan": 2e-4, "ddpm": 1e-3}

logger = logging.getLogger(__name__)


def build_generator(backbone: str, spatial_dims: int, latent_size: int, out_channels: int, spatial_size,
                    num_classes: int | None = None) -> torch.nn.Module:
    """The shared generator backbones at the benchmark's (CPU-sized) widths."""
    from ..networks import ConvGenerator, FiLMUNetGenerator, ResNetGenerator

    common = {"spatial_dims": spatial_dims, "latent_size": latent_size, "out_channels": out_channels,
              "spatial_size": spatial_size, "num_classes": num_classes}
    if backbone == "conv":
        return ConvGenerator(**common, channels=(256, 128, 64, 32))
    if backbone == "resnet":
        return ResNetGenerator(**common, channels=(128, 128, 64, 32))
    if backbone == "film_unet":
        return FiLMUNetGenerator(**common, channels=(32, 64, 128))
    raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}.")


def cross_encoder_path(settings: Mapping[str, Any], kind: str) -> Path:
    """``<output>/domain_encoder_<kind>.pt``: a cross-check space's encoder."""
    return Path(settings["output"]) / f"domain_encoder_{kind}.pt"


def load_cross_encoders(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{kind: encoder}`` of the run's cross-check spaces (``settings["cross_spaces"]``) whose files exist."""
    from ..metrics import load_domain_encoder

    paths = {kind: cross_encoder_path(settings, kind) for kind in settings.get("cross_spaces", ())}
    return {kind: load_domain_encoder(path) for kind, path in paths.items() if path.is_file()}


def run_scorer(data: Mapping[str, Any], settings: Mapping[str, Any], encoder):
    """The :class:`~monai_neurosql.metrics.SampleScorer` every set of a run is scored with (the cells' samples,
    the controls, a rescore): the test split against the training images, the run's cross-check spaces, and the
    memorization audit's held-out calibration kept under ``<output>/audit_cache/`` (computed by the first scorer of
    the run, reused by every later one of the same images and encoder)."""
    from ..metrics import SampleScorer

    return SampleScorer(data["reference_images"], encoder=encoder, train=data["train_images"],
                        audit_samples=int(settings.get("audit_samples", 1024)),
                        cross_encoders=load_cross_encoders(settings),
                        audit_cache=Path(settings["output"]) / "audit_cache")


def load_space_encoders(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{space: encoder}`` of every feature space a run scores in: ``"domain"`` (the headline encoder) and the
    cross-check spaces (:func:`load_cross_encoders`), as the paired comparisons take them."""
    from ..metrics import load_domain_encoder

    return {"domain": load_domain_encoder(settings["encoder_path"]), **load_cross_encoders(settings)}


def cell_key(cell: Mapping[str, Any]) -> str:
    """The cell's identity in ``results.csv`` (an interrupted sweep skips finished keys)."""
    cond = "cond" if str(cell["conditional"]) == "True" else "uncond"
    parts = [str(cell[k]) for k in ("dataset", "model", "backbone", "latent_size", "seed", "variant")]
    return "|".join(parts + [cond, str(cell.get("protocol", "epochs"))])


def cell_dir(output: str | Path, cell: Mapping[str, Any]) -> Path:
    """``<output>/cells/<key>``: the cell's checkpoint, samples and pictures."""
    return Path(output) / "cells" / cell_key(cell).replace("|", "_")


def scored_count(num_samples: int, data: Mapping[str, Any]) -> int:
    """Images per metric: as many generated as held-out real ones (matched counts, appendix E), at most
    ``num_samples``."""
    return min(num_samples, len(data["reference_images"]))


def _schedule(optimizer: torch.optim.Optimizer, steps: int):
    from monai.handlers import LrScheduleHandler

    return LrScheduleHandler(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps)),
                             epoch_level=False, print_lr=False)


def build_model(cell: Mapping[str, Any], data: Mapping[str, Any], loader, max_epochs: int, device: torch.device,
                settings: Mapping[str, Any]) -> dict[str, Any]:
    """The cell's trainer and what the cell needs around it.

    Returns:
        ``{"trainer", "params", "sampler": (num, seed, labels) -> images, "modules": {name: module} (what the
        checkpoint and the early-stopping snapshot hold), "extra_state": callable -> dict (e.g. the latent bank),
        "assignment": the NeuroSQL assignment handler or None, "state": {name: object with state_dict} (the rest
        of what a resumed cell needs: optimizers, learning-rate schedules, the latent bank, the assignment
        handler)}``.
    """
    from monai.data import Dataset

    from .. import LatentBank, generate
    from ..baselines import (
        VAE,
        DDPMTrainer,
        Discriminator,
        GANTrainer,
        MLPEncoder,
        VAETrainer,
        dcgan_init,
        matched_diffusion_unet,
    )
    from ..data import assignment_loader
    from ..engines import NeuroSQLTrainer
    from ..handlers import QuantileAssignmentHandler
    from ..networks import count_parameters

    model, variant, images = cell["model"], cell["variant"], data["train_images"]
    layout = {"channels_last": bool(settings.get("channels_last", True))}  # off only to measure it
    conditional = str(cell["conditional"]) == "True"
    num_classes = data["num_classes"] if conditional else None
    generator = build_generator(cell["backbone"], images.ndim - 2, int(cell["latent_size"]), images.shape[1],
                                tuple(images.shape[2:]), num_classes)
    # cosine schedules span the epochs the protocol allows (the cap for wall-clock and early stopping)
    steps = max_epochs * len(loader)
    lr = LEARNING_RATES[model]
    if model == "neurosql":
        labels = data["train_labels"]
        n = len(images)
        bank = LatentBank.class_conditional(labels, int(cell["latent_size"]), seed=int(cell["seed"])) if conditional \
            else LatentBank.create(n, int(cell["latent_size"]), seed=int(cell["seed"]))
        optimizer = torch.optim.AdamW(generator.parameters(), lr=lr, weight_decay=1e-4)
        items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(n)]
        handler = QuantileAssignmentHandler(
            assignment_loader(Dataset(items)) if variant != "minibatch" else None, every_n_epochs=2,
            **NEUROSQL_VARIANTS[variant])
        schedule = _schedule(optimizer, steps)
        trainer = NeuroSQLTrainer(device, max_epochs, loader, generator, bank, optimizer,
                                  train_handlers=[schedule, handler], seed=int(cell["seed"]), **layout)
        return {"trainer": trainer, "params": count_parameters(generator),
                "sampler": lambda num, seed, lab: generate(generator, num, bank.lattice, seed=seed, labels=lab),
                "modules": {"generator": generator}, "extra_state": lambda: {"bank": bank.state_dict()},
                "assignment": handler, "state": {"optimizer": optimizer, "schedule": schedule.lr_scheduler,
                                                 "bank": bank, "assignment": handler}}
    if model == "vae":
        encoder = MLPEncoder(tuple(images.shape[1:]), int(cell["latent_size"]), num_classes=num_classes)
        vae = VAE(generator, encoder)
        optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
        schedule = _schedule(optimizer, steps)
        trainer = VAETrainer(device, max_epochs, loader, vae, optimizer, beta=float(settings.get("vae_beta", 0.005)),
                             train_handlers=[schedule], **layout)
        return {"trainer": trainer, "params": count_parameters(vae), "sampler": trainer.sample,
                "modules": {"vae": vae}, "extra_state": dict, "assignment": None,
                "state": {"optimizer": optimizer, "schedule": schedule.lr_scheduler}}
    if model == "gan":
        hinge = variant == "hinge"
        disc = Discriminator(images.ndim - 2, images.shape[1], num_classes=num_classes, spectral_norm=hinge)
        dcgan_init(generator)
        dcgan_init(disc)
        g_opt, d_opt = GANTrainer.dcgan_optimizers(generator, disc, lr=lr)
        trainer = GANTrainer(device, max_epochs, loader, generator, disc, g_opt, d_opt,
                             loss="hinge" if hinge else "bce", grad_clip_norm=None, **layout)
        return {"trainer": trainer, "params": count_parameters(generator) + count_parameters(disc),
                "sampler": trainer.sample, "modules": {"generator": generator, "discriminator": disc},
                "extra_state": dict, "assignment": None, "state": {"g_optimizer": g_opt, "d_optimizer": d_opt}}
    if model == "ddpm":
        # widths move in steps of 4 channels: at small images the closest U-Net can miss the paper's 10%
        unet = matched_diffusion_unet(images.ndim - 2, images.shape[1], count_parameters(generator),
                                      num_classes=num_classes, tolerance=0.2)
        optimizer = torch.optim.Adam(unet.parameters(), lr=lr)
        trainer = DDPMTrainer(device, max_epochs, loader, unet, optimizer, spatial_shape=tuple(images.shape[2:]),
                              in_channels=images.shape[1],
                              num_train_timesteps=int(settings.get("ddpm_timesteps", 1000)),
                              num_inference_steps=int(settings.get("ddpm_sampling_steps", 100)),
                              ema_decay=DDPM_EMA_DECAY if variant == "ema" else None, **layout)
        modules = {"unet": unet, **({"ema": trainer.ema} if trainer.ema is not None else {})}
        return {"trainer": trainer, "params": count_parameters(unet), "sampler": trainer.sample,
                "modules": modules, "extra_state": dict, "assignment": None, "state": {"optimizer": optimizer}}
    raise ValueError(f"model must be one of {MODELS}, got {model!r}.")


class _WallClock:
    """Stop training once ``seconds`` of training (evaluation excluded) have passed."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds, self.clock = seconds, clock

    def __call__(self, engine) -> None:
        if self.clock() >= self.seconds:
            engine.terminate()


class _EarlyStopping:
    """Every ``every`` epochs: KID (domain features) of ``num`` samples against the validation images; keeps a copy
    of the best weights, stops after ``patience`` evaluations without improvement, and times itself so that the
    cell's training time excludes evaluation."""

    def __init__(self, sampler, modules: Mapping[str, torch.nn.Module], encoder, validation: torch.Tensor,
                 num: int, patience: int, seed: int, conditional_classes: int | None) -> None:
        from ..metrics import extract_features

        self.sampler, self.modules, self.encoder = sampler, modules, encoder
        self.reference = extract_features(encoder, validation[:num])
        self.num, self.patience, self.seed = min(num, len(validation)), patience, seed
        self.labels = torch.arange(self.num) % conditional_classes if conditional_classes else None
        self.best, self.best_epoch, self.best_state, self.bad, self.seconds = float("inf"), 0, None, 0, 0.0
        self.history: list[tuple[int, float]] = []

    def __call__(self, engine) -> None:
        from ..metrics import extract_features, kernel_distance

        start = time.perf_counter()
        fake = self.sampler(self.num, self.seed, self.labels).float()
        kid = kernel_distance(self.reference, extract_features(self.encoder, fake))["kid"]
        self.history.append((engine.state.epoch, kid))
        if kid < self.best:
            self.best, self.best_epoch, self.bad = kid, engine.state.epoch, 0
            self.best_state = {k: copy.deepcopy(m.state_dict()) for k, m in self.modules.items()}
        else:
            self.bad += 1
            if self.stopped:
                engine.terminate()
        logger.info(f"  epoch {engine.state.epoch}: validation KID {kid:.4g} (best {self.best:.4g} at epoch "
                    f"{self.best_epoch}; {self.bad}/{self.patience} without improvement)")
        self.seconds += time.perf_counter() - start

    @property
    def stopped(self) -> bool:
        """Whether ``patience`` evaluations in a row did not improve on the best (training ends)."""
        return self.bad >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            for name, module in self.modules.items():
                module.load_state_dict(self.best_state[name])

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state, "bad": self.bad,
                "seconds": self.seconds, "history": [list(item) for item in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch, self.bad = float(state["best"]), int(state["best_epoch"]), int(state["bad"])
        self.best_state, self.seconds = state["best_state"], float(state["seconds"])
        self.history = [(int(epoch), float(kid)) for epoch, kid in state["history"]]


def _grid(images: torch.Tensor, path: Path) -> None:
    from ..visualize import save_grid_png

    save_grid_png(images[:32], path, nrow=16, scale=2)


def run_cell(cell: Mapping[str, Any], data: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Train one model under the cell's protocol, save its checkpoint and the samples every metric used, and score
    them; returns the result row.

    Files under :func:`cell_dir`: ``checkpoint.pt`` (state dicts of the model's modules, the NeuroSQL latent bank,
    the cell and the settings, and under ``early_stop`` the ``validation_kids`` as ``[epoch, KID]`` pairs;
    ``torch.load(..., weights_only=True)``), ``samples.npz`` (``images``: exactly the
    generated images the metrics scored; ``labels`` for conditional models; ``sample_seconds``), ``samples.png``
    and ``memorization_worst_pairs.png``. While the cell trains, ``resume.pt`` holds everything its training
    needs to continue (weights, optimizers, schedules, early-stopping state, random generators; written about
    every ``settings["resume_every"]`` seconds, default 60, and at the end): a cell cut by a crash or a kill
    continues from it when run again, to the same result, and once its samples are saved they are reused
    instead of drawn again.
    """
    from ..data import train_loader
    from ..metrics import load_domain_encoder, paired_ssim

    seed = int(cell["seed"])
    torch.manual_seed(seed)
    torch.set_num_threads(int(settings["threads"]))
    logging.getLogger("ignite").setLevel(logging.WARNING)
    device = torch.device(settings["device"])
    protocol = cell.get("protocol", "epochs")
    out = cell_dir(settings["output"], cell)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = data["train_images"], data["train_labels"]
    items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(len(images))]
    from monai.data import Dataset

    loader = train_loader(Dataset(items), int(settings["batch_size"]), seed=seed, drop_last=False)
    max_epochs = int(settings["epochs"]) if protocol == "epochs" else int(settings["max_epochs"])
    built = build_model(cell, data, loader, max_epochs, device, settings)
    trainer = built["trainer"]
    encoder = load_domain_encoder(settings["encoder_path"])
    conditional = str(cell["conditional"]) == "True"
    from ignite.engine import Events

    stopper: _EarlyStopping | None = None
    from ignite.handlers import Timer

    writes = Timer()  # resume checkpoints, like evaluation, are not training time: runs only around their writes
    writes.pause()
    train_clock = TrainClock(lambda: (stopper.seconds if stopper is not None else 0.0) + writes.value())
    if protocol == "wallclock":
        trainer.add_event_handler(Events.ITERATION_COMPLETED, _WallClock(float(settings["wallclock_seconds"]),
                                                                          train_clock))
    elif protocol == "early_stop":
        stopper = _EarlyStopping(built["sampler"], built["modules"], encoder, data["unseen_images"],
                                 int(settings["val_samples"]), int(settings["patience"]), seed=500 + seed,
                                 conditional_classes=data["num_classes"] if conditional else None)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=int(settings["eval_every"])), stopper)
    elif protocol != "epochs":
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    every = max(1, max_epochs // 10)  # about ten progress lines per cell (a cell runs minutes to hours on a CPU)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=every), lambda engine: logger.info(
        f"  epoch {engine.state.epoch}/{max_epochs}: {train_clock():.0f} s of training"))
    # the config first (a mismatch loads nothing); the early-stopping state before the clock that reads its seconds
    finished = resumable(trainer, out / "resume.pt", {
        "config": CellConfig(out / "resume.pt", cell, settings, images), "trainer": trainer,
        **built["modules"], **built["state"], **({"early_stop": stopper} if stopper is not None else {}),
        "clock": train_clock, "random": RandomState(device)}, float(settings.get("resume_every", 60.0)), writes,
        stopped=lambda: trainer.state.epoch >= max_epochs or (stopper is not None and stopper.stopped))
    if not finished:
        trainer.run()
    train_seconds = train_clock()
    epochs_run = trainer.state.iteration / max(1, len(loader))
    best_epoch = epochs_run
    if stopper is not None:
        stopper.restore()
        best_epoch = stopper.best_epoch
    torch.save({"cell": dict(cell), "settings": {k: v for k, v in settings.items() if isinstance(v, (int, float, str))},
                "epochs_run": epochs_run, "best_epoch": best_epoch,
                # early_stop: every (epoch, validation KID) the selection saw, so the choice can be re-checked
                "validation_kids": [list(item) for item in stopper.history] if stopper is not None else [],
                **{name: module.state_dict() for name, module in built["modules"].items()}, **built["extra_state"]()},
               out / "checkpoint.pt")

    num = scored_count(int(settings["num_samples"]), data)
    sample_labels = (torch.arange(num) % data["num_classes"]) if conditional else None
    samples = out / "samples.npz"
    kept = {}
    if finished and samples.is_file():  # sampled after this training, then cut while scoring
        try:
            with open(samples, "rb") as f, np.load(f) as saved:
                kept = {k: saved[k] for k in ("images", "sample_seconds") if k in saved}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            logger.warning(f"  {samples} cannot be read ({error}); sampling again")
    if len(kept) == 2 and tuple(kept["images"].shape) == (num, *images.shape[1:]):
        fake, sample_seconds = torch.from_numpy(kept["images"]), float(kept["sample_seconds"])
        logger.info(f"  {num} images already sampled after this training ({samples}); scoring them")
    else:
        # a DDPM's reverse chains can take longer than its training (64 px, 504 images: about 32 minutes on one
        # thread)
        logger.info(f"  sampling {num} images")
        sample_start = time.perf_counter()
        fake = built["sampler"](num, 1000 + seed, sample_labels).float().cpu()
        sample_seconds = time.perf_counter() - sample_start
        logger.info(f"  sampled {num} images in {sample_seconds:.0f} s; scoring them")
        with atomic_write(samples) as partial:  # written whole, then renamed: a kill leaves no damaged samples.npz
            np.savez_compressed(partial, images=fake.numpy(), sample_seconds=np.float64(sample_seconds),
                                **({"labels": sample_labels.numpy()} if sample_labels is not None else {}))
    _grid(fake, out / "samples.png")
    scores = run_scorer(data, settings, encoder)(fake, png_path=out / "memorization_worst_pairs.png")
    row: dict[str, Any] = {
        **cell, "protocol": protocol, "epochs_run": round(epochs_run, 3), "best_epoch": best_epoch,
        "n_train": len(images), "params": built["params"], "train_seconds": train_seconds,
        "sec_per_epoch": train_seconds / max(epochs_run, 1e-9), "sample_seconds": sample_seconds,
        "ssim_random_pairs": paired_ssim(data["reference_images"][:num], fake, num_pairs=50, seed=0),
        **scores, "cell_dir": str(out),
    }
    handler = built["assignment"]
    if handler is not None and handler.history:
        row.update({"assign_seconds": sum(h["seconds"] for h in handler.history),
                    "assign_cost_seconds": sum(h["cost_seconds"] for h in handler.history),
                    "assign_solve_seconds": sum(h["solve_seconds"] for h in handler.history),
                    "assign_decode_seconds": sum(h["decode_seconds"] for h in handler.history),
                    "assignments": len(handler.history)})
    row.update(_pretrained_scores(data["reference_images"][:num], fake, settings))
    if settings.get("classifier") and conditional:
        from ..metrics import downstream_classifier

        scores = downstream_classifier(built["sampler"], data["num_classes"], data["reference_images"],
                                       data["reference_labels"], int(settings["num_synthetic"]), images, labels,
                                       epochs=int(settings["classifier_epochs"]), seed=2000 + seed)
        row.update({"clf_accuracy": scores["synthetic_only"]["accuracy"],
                    "clf_macro_precision": scores["synthetic_only"]["macro_precision"],
                    "clf_macro_recall": scores["synthetic_only"]["macro_recall"],
                    "real_only_accuracy": scores["real_only"]["accuracy"],
                    "real_plus_synthetic_accuracy": scores["real_plus_synthetic"]["accuracy"]})
    row["peak_rss_mb"] = peak_rss_mib()
    return row


def _pretrained_scores(real: torch.Tensor, fake: torch.Tensor, settings: Mapping[str, Any]) -> dict[str, Any]:
    """FID and the other pretrained-feature scores whose weights files were given (each below its minimum count
    reported as such)."""
    from ..metrics import (
        MIN_SAMPLES,
        below_minimum,
        fd_imagenet_inception,
        fd_medicalnet,
        fd_radimagenet,
        fid,
        lpips_distance,
    )

    n, out = len(fake), {}
    for name, key, fn, minimum in (("fid", "fid_weights", fid, MIN_SAMPLES["fid"]),
                                   ("fd_imagenet_inception", "imagenet_inception_weights", fd_imagenet_inception,
                                    MIN_SAMPLES["fid"]),
                                   ("fd_radimagenet", "radimagenet_weights", fd_radimagenet, MIN_SAMPLES["fid"]),
                                   ("fd_medicalnet", "medicalnet_weights", fd_medicalnet, MIN_SAMPLES["fid"])):
        if settings.get(key):
            value = fn(real, fake, weights_path=settings[key], num_samples=None) if n >= minimum else None
            out[name] = below_minimum(value, n, minimum)
    if settings.get("lpips_weights") and fake.ndim == 4:
        out["lpips"] = lpips_distance(real, fake, weights_path=settings["lpips_weights"])
    return out


def score_controls(data: Mapping[str, Any], settings: Mapping[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """Rows for the control sets (:func:`~monai_neurosql.metrics.control_sets`), scored exactly like a model's
    samples: ``num`` = the cell's matched count; unseen real images from the validation split."""
    from ..metrics import control_sets, load_domain_encoder, paired_ssim

    encoder = load_domain_encoder(settings["encoder_path"])
    num = scored_count(int(settings["num_samples"]), data)
    sets = control_sets(data["train_images"], data["unseen_images"], num, seed=seed)
    scorer = run_scorer(data, settings, encoder)
    out = Path(settings["output"]) / "controls"
    rows = []
    for name, images in sets.items():
        scores = scorer(images, png_path=out / f"{name}_worst_pairs.png")
        _grid(images, out / f"{name}.png")
        np.savez_compressed(out / f"{name}.npz", images=images.numpy())
        rows.append({"dataset": data["name"], "model": f"control:{name}", "protocol": "control",
                     "ssim_random_pairs": paired_ssim(data["reference_images"][:num], images, num_pairs=50, seed=0),
                     **scores, **_pretrained_scores(data["reference_images"][:num], images, settings)})
    return rows


def select_vae_beta(cell: Mapping[str, Any], data: Mapping[str, Any], settings: Mapping[str, Any],
                    beta: float) -> float:
    """Train the cell's VAE with KL weight ``beta`` for ``settings["epochs"]`` epochs and return the KID (domain
    features) of ``val_samples`` samples against the validation split: the selection score (lower is better)."""
    from monai.data import Dataset

    from ..data import train_loader
    from ..metrics import extract_features, kernel_distance, load_domain_encoder

    torch.manual_seed(int(cell["seed"]))
    torch.set_num_threads(int(settings["threads"]))
    logging.getLogger("ignite").setLevel(logging.WARNING)
    images, labels = data["train_images"], data["train_labels"]
    items = [{"image": images[i], "index": i, "label": int(labels[i])} for i in range(len(images))]
    loader = train_loader(Dataset(items), int(settings["batch_size"]), seed=int(cell["seed"]))
    built = build_model(cell, data, loader, int(settings["epochs"]), torch.device(settings["device"]),
                        {**settings, "vae_beta": beta})
    built["trainer"].run()
    encoder = load_domain_encoder(settings["encoder_path"])
    num = min(int(settings["val_samples"]), len(data["unseen_images"]))
    conditional = str(cell["conditional"]) == "True"
    lab = torch.arange(num) % data["num_classes"] if conditional else None
    fake = built["sampler"](num, 700, lab).float()
    return kernel_distance(extract_features(encoder, data["unseen_images"][:num]),
                           extract_features(encoder, fake))["kid"]


def rescore_rows(rows: list[dict[str, Any]], data: Mapping[str, Any], settings: Mapping[str, Any]) -> list[dict]:
    """Score every cell's saved ``samples.npz`` again with the current metrics (no retraining): the rows with
    their scores replaced; training columns (time, epochs, parameters) are kept."""
    from ..metrics import load_domain_encoder

    torch.set_num_threads(int(settings["threads"]))
    scorer = run_scorer(data, settings, load_domain_encoder(settings["encoder_path"]))
    out = []
    for row in rows:
        samples = Path(row["cell_dir"]) / "samples.npz"
        if not samples.is_file():
            raise FileNotFoundError(f"{samples} is missing: the cell {cell_key(row)} cannot be re-scored.")
        fake = torch.from_numpy(np.load(samples)["images"])
        out.append({**row, **scorer(fake, png_path=Path(row["cell_dir"]) / "memorization_worst_pairs.png")})
    return out
