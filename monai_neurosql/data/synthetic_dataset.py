"""A MONAI dataset of synthetic samples from a trained NeuroSQL generator, seeded per index, on the fly or cached.

Length: one dataset class and the loader of a trained run it is built from; over a quarter is docstring
(seeding, memory and speed are part of its contract).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.utils import min_version, optional_import
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.utils.data import get_worker_info

from .. import LatentBank, QuantileLattice, decode
from ..networks import generator_builder
from .prepare import read_data_info

tqdm, has_tqdm = optional_import("tqdm", "4.47.0", min_version, "tqdm")

__all__ = ["SyntheticDataset", "load_trained_generator"]

logger = logging.getLogger(__name__)

#: Checkpoint files of a training run, in order of preference: the last epoch (what the bundles generate from),
#: then the key-metric checkpoint (lowest validation assignment cost).
CHECKPOINT_NAMES = ("model.pt", "best.pt")

# data_info.json entries the generator is built from (as bundles/*/configs/inference.json builds "network_def")
_NETWORK_KEYS = ("spatial_dims", "latent_size", "spatial_size", "channels")


def _find_checkpoint(path: Path) -> Path:
    """The checkpoint of a run folder, its ``models/`` folder, or a checkpoint file."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} does not exist: pass a training run folder (the bundle_root of "
                                "train.json), its models/ folder or a checkpoint file.")
    folders = [path / "models", path] if (path / "models").is_dir() else [path]
    for folder in folders:
        for name in CHECKPOINT_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"no checkpoint in {str(folders[0])!r}: expected {' or '.join(CHECKPOINT_NAMES)} (written by the bundle's "
        f"train.json with --bundle_root {str(path)!r}); train first, or pass the checkpoint file itself."
    )


def _network_from_info(info: Mapping, where: str) -> nn.Module:
    """The bundle's ``network_def`` built from the settings in ``data_info.json``: the class it records
    (``"network"``, :func:`~monai_neurosql.networks.generator_class`; a
    :class:`~monai_neurosql.networks.ConvGenerator` for older runs) with its recorded settings (``"network_args"``,
    :func:`~monai_neurosql.networks.generator_args`; the class's defaults for runs that predate the entry)."""
    missing = [k for k in _NETWORK_KEYS if k not in info]
    if "out_channels" not in info and "shape" not in info:
        missing.append("out_channels (or shape)")
    if missing:
        raise ValueError(f"{where} lacks the generator settings {missing}: pass data_info with them, or pass "
                         "generator= built like the training run's network_def.")
    out_channels = int(info["out_channels"] if "out_channels" in info else info["shape"][0])
    return generator_builder(info)(
        spatial_dims=int(info["spatial_dims"]),
        latent_size=int(info["latent_size"]),
        out_channels=out_channels,
        spatial_size=info["spatial_size"],
        channels=info["channels"],
        num_classes=info.get("num_classes"),
    )


def load_trained_generator(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    data_info: str | os.PathLike | Mapping | None = None,
    generator: nn.Module | None = None,
) -> tuple[nn.Module, QuantileLattice, dict]:
    """Load the generator and the latent lattice of a trained NeuroSQL run, as the inference bundle does.

    The checkpoint is ``models/model.pt`` (the last epoch, what the bundles' inference uses) when the run wrote
    one, else ``models/best.pt`` (the lowest validation assignment cost; pass the file itself to prefer it), both in
    the layout of the bundles' ``checkpoint_dict``
    (``"generator"``, ``"bank"``, ...). The network is built from ``models/data_info.json`` exactly as
    ``bundles/*/configs/inference.json`` builds ``network_def``: the generator class the run recorded
    (``"network"``; a :class:`~monai_neurosql.networks.ConvGenerator` for runs that predate it) with the recorded
    settings (the shared ones and ``"network_args"``: activation, normalization, the class's own settings); runs
    whose settings could not be recorded pass their network as ``generator``.

    Args:
        path: a training run folder (the ``--bundle_root`` of ``train.json``), its ``models/`` folder, or a
            checkpoint file.
        device: where the generator is put. Default CPU.
        data_info: the run's settings: a ``data_info.json`` path or a dict with ``spatial_dims``, ``latent_size``,
            ``spatial_size``, ``channels``, ``num_classes`` and ``shape`` (or ``out_channels``). Default: the
            ``data_info.json`` beside the checkpoint. Not needed when ``generator`` is given.
        generator: a network to load the weights into instead of building one from ``data_info``.

    Raises:
        FileNotFoundError: no checkpoint (or no ``data_info.json`` when it is needed) under ``path``.
        ValueError: the checkpoint has no ``"generator"`` entry, or its weights do not fit the network.

    Returns:
        ``(generator, lattice, info)``: the generator in eval mode on ``device``; the lattice of the checkpoint's
        latent bank (its prior and dimension drive sampling); the settings, with ``"checkpoint"`` (the file read)
        added.

    Example::

        generator, lattice, info = load_trained_generator("runs/path")
    """
    ckpt = _find_checkpoint(Path(path).expanduser())
    if isinstance(data_info, Mapping):
        info, info_src = dict(data_info), "data_info"
    else:
        info_path = Path(data_info) if data_info is not None else ckpt.parent / "data_info.json"
        if generator is not None and data_info is None and not info_path.is_file():
            info, info_src = {}, str(info_path)
        else:
            info, info_src = read_data_info(info_path), str(info_path)
    network = generator if generator is not None else _network_from_info(info, info_src)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or "generator" not in state:
        keys = list(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{str(ckpt)!r} has no 'generator' entry (found {keys}); pass a checkpoint written by the "
                         "NeuroSQL train.json (its checkpoint_dict).")
    weights = dict(state["generator"])
    consume_prefix_in_state_dict_if_present(weights, "module.")  # saved from a DDP-wrapped network
    try:
        network.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"the generator weights in {str(ckpt)!r} do not fit the network built from {info_src} "
                         f"({err}); pass generator= built like the training run's network_def.") from err
    if "bank" in state:
        lattice = LatentBank.from_state_dict(state["bank"]).lattice
    else:
        latent_size = info.get("latent_size", getattr(network, "latent_size", None))
        if latent_size is None:
            raise ValueError(f"{str(ckpt)!r} has no 'bank' entry and {info_src} no latent_size; pass data_info.")
        lattice = QuantileLattice(torch.zeros(1, int(latent_size)), prior=info.get("prior", "gaussian"))
    info["checkpoint"] = str(ckpt)
    return network.to(device).eval(), lattice, info


def _labels_for(
    num_classes: int | None,
    num_samples: int | None,
    labels: int | Sequence[int] | torch.Tensor | None,
    num_per_class: Mapping[int, int] | None,
) -> tuple[int, torch.Tensor | None]:
    """``(num_samples, labels)`` from the requested classes (one label per index, or ``None``)."""
    if num_classes is None:
        if labels is not None or num_per_class is not None:
            raise ValueError("the generator is unconditional (num_classes=None): labels and num_per_class need a "
                             "class-conditional run (train with conditional=true).")
        if num_samples is None:
            raise ValueError("pass num_samples, the number of synthetic images.")
        result = None
    elif labels is not None and num_per_class is not None:
        raise ValueError("pass labels or num_per_class, not both.")
    elif num_per_class is not None:
        counts = {int(c): int(k) for c, k in num_per_class.items()}
        if any(k < 0 for k in counts.values()):
            raise ValueError(f"num_per_class needs non-negative counts, got {dict(num_per_class)}.")
        result = torch.tensor([c for c, k in sorted(counts.items()) for _ in range(k)], dtype=torch.long)
    elif labels is not None and not isinstance(labels, int):
        result = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    else:
        if num_samples is None:
            raise ValueError("pass num_samples (or labels / num_per_class for a class-conditional generator).")
        # every class in turn by default, as the inference bundle does
        result = (torch.full((num_samples,), labels, dtype=torch.long) if isinstance(labels, int)
                  else torch.arange(num_samples) % num_classes)
    if result is not None:
        if num_samples is not None and num_samples != len(result):
            raise ValueError(f"num_samples={num_samples} but {len(result)} labels were requested; pass one of them.")
        num_samples = len(result)
        if len(result) and (result.min() < 0 or result.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes - 1}] (the generator's classes), got "
                             f"{sorted(set(result.tolist()))}.")
    if num_samples < 1:
        raise ValueError(f"the dataset needs at least one sample, got num_samples={num_samples}.")
    return int(num_samples), result


class SyntheticDataset(Dataset):
    """Synthetic images of a trained NeuroSQL generator as MONAI dictionary items, reproducible per index.

    Item ``i`` is ``G(z_i[, label_i])`` with ``z_i`` drawn from the lattice's prior by a random stream that depends
    only on ``(seed, i)`` (``numpy.random.SeedSequence(seed).spawn`` child ``i``): the same index gives the same
    image whatever the access order, the DataLoader workers or the dataset length (a dataset of 100 samples is
    the first 100 of one of 1000). Items are::

        {"image": MetaTensor C x [SPATIAL] (float in the generator's range, [0, 1] with its sigmoid),
         "label": int (class-conditional generators only),
         "synthetic": True}

    and ``image.meta`` holds ``synthetic`` (True), ``checkpoint`` (the file loaded, ``""`` when the generator was
    passed in), ``seed``, ``index``, ``filename_or_obj`` (``synthetic_000042``, so ``SaveImaged`` names files) and
    an affine with the training spacing.

    Generation runs on ``device`` and items are returned on ``output_device`` (CPU by default). On the fly
    (default), each ``dataset[i]`` decodes one image, and a DataLoader's batch is decoded in one pass (the dataset
    implements ``__getitems__``). Batched decoding equals one-by-one decoding to float32 rounding (about 1e-7: the
    convolution kernels sum in another order for another batch size); a loader with the same seed gives the same
    batches with any ``num_workers`` (bit for bit in our tests on CPU). With ``cache=True`` every image is generated once at construction, in batches of
    ``batch_size`` with a progress bar, and kept on ``output_device``: ``num_samples x C x [SPATIAL] x 4`` bytes
    (10,000 images of 28 x 28: 30 MiB; 1,000 volumes of 64^3: 1 GiB). The generator is copied at construction, so
    training it further does not change the dataset.

    ``transform`` is applied to every item when it is served (also to cached items), as MONAI's ``Dataset`` does.
    Generation on a GPU does not run inside DataLoader worker processes: use ``num_workers=0`` (the GPU is fast
    enough) or ``cache=True``.

    Args:
        generator: a trained generator ``G(z[, labels])`` (e.g. :class:`~monai_neurosql.networks.ConvGenerator`).
        lattice: the training lattice (``bank.lattice``) or the :class:`~monai_neurosql.LatentBank`; its prior and
            dimension are used.
        num_samples: number of items; may be left out when ``labels`` is a sequence or ``num_per_class`` is given.
        labels: for class-conditional generators, one class for every item, or one class per item. Default:
            every class in turn (``i % num_classes``).
        num_per_class: for class-conditional generators, ``{class: count}``; items are ordered by class.
        seed: the sampling seed (a non-negative int).
        transform: a callable or sequence of callables applied to each item (MONAI ``Compose``).
        cache: generate all items at construction and keep them.
        device: where the generator runs. Default: where ``generator`` is.
        output_device: where returned images live. Default CPU.
        batch_size: images per forward pass when caching and within a DataLoader batch.
        spacing: pixel/voxel spacing written into the images' affine. Default 1.0 per axis.
        checkpoint: the checkpoint the generator came from, recorded in the meta data.
        progress: show a progress bar while caching (needs ``tqdm``).

    Raises:
        ValueError: unconditional generator with labels, labels outside the generator's classes, inconsistent
            ``num_samples``, a negative seed, or a generator whose latent size differs from the lattice's.

    Example::

        from monai.data import DataLoader
        from monai_neurosql.data import SyntheticDataset

        synth = SyntheticDataset.from_run("runs/path", num_per_class={0: 500, 1: 500}, seed=0, cache=True)
        batch = next(iter(DataLoader(synth, batch_size=32, shuffle=True)))
        batch["image"].shape, batch["label"][:4], batch["synthetic"][:4]  # (32, 1, 28, 28), ..., all True
    """

    def __init__(
        self,
        generator: nn.Module,
        lattice: QuantileLattice | LatentBank,
        num_samples: int | None = None,
        labels: int | Sequence[int] | torch.Tensor | None = None,
        num_per_class: Mapping[int, int] | None = None,
        seed: int = 0,
        transform: Callable | Sequence[Callable] | None = None,
        cache: bool = False,
        device: torch.device | str | None = None,
        output_device: torch.device | str = "cpu",
        batch_size: int = 64,
        spacing: Sequence[float] | None = None,
        checkpoint: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        if isinstance(generator, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            generator = generator.module
        if isinstance(lattice, LatentBank):
            lattice = lattice.lattice
        if not isinstance(lattice, QuantileLattice):
            raise TypeError(f"lattice must be a QuantileLattice or a LatentBank, got {type(lattice).__name__}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        latent_size = getattr(generator, "latent_size", lattice.dim)
        if latent_size != lattice.dim:
            raise ValueError(f"the generator takes {latent_size}-d codes but the lattice is {lattice.dim}-d; pass the "
                             "lattice of the run that trained it (bank.lattice).")
        self.num_classes: int | None = getattr(generator, "num_classes", None)
        num, self.labels = _labels_for(self.num_classes, num_samples, labels, num_per_class)
        super().__init__(data=range(num), transform=transform)
        self.lattice = lattice
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.checkpoint = "" if checkpoint is None else str(checkpoint)
        if device is None:
            param = next(iter(generator.parameters()), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.output_device = torch.device(output_device)
        # a private, frozen copy: further training of the caller's generator must not change the samples
        self.generator = copy.deepcopy(generator).to(self.device).eval().requires_grad_(False)
        self._spacing = None if spacing is None else [float(s) for s in spacing]
        self._cache: torch.Tensor | None = self._build_cache(progress) if cache else None

    @classmethod
    def from_run(
        cls,
        path: str | os.PathLike,
        num_samples: int | None = None,
        data_info: str | os.PathLike | Mapping | None = None,
        generator: nn.Module | None = None,
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> SyntheticDataset:
        """A dataset from a training run folder or checkpoint (see :func:`load_trained_generator`).

        Args:
            path: the run folder (``--bundle_root`` of ``train.json``), its ``models/`` folder or a checkpoint file;
                ``models/model.pt`` is preferred over ``models/best.pt``.
            num_samples: number of items.
            data_info: the run's settings when ``data_info.json`` is not beside the checkpoint.
            generator: the network to load the weights into, for runs not trained with the default network.
            device: where the generator runs. Default CPU.
            kwargs: the other arguments of :class:`SyntheticDataset` (``labels``, ``num_per_class``, ``seed``,
                ``transform``, ``cache``, ``output_device``, ``batch_size``, ``progress``).
        """
        network, lattice, info = load_trained_generator(path, device, data_info, generator)
        kwargs.setdefault("spacing", info.get("spacing"))
        return cls(network, lattice, num_samples, device=device, checkpoint=info["checkpoint"], **kwargs)

    # ------------------------------------------------------------------ generation
    def latent_codes(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The latent codes ``z_i`` of the items ``indices``: ``(len(indices), d)`` float32 on the CPU."""
        codes = []
        for i in indices:
            state = np.random.SeedSequence(self.seed, spawn_key=(int(i),)).generate_state(1, dtype=np.uint64)[0]
            codes.append(self.lattice.sample(1, generator=torch.Generator().manual_seed(int(state))))
        return torch.cat(codes) if codes else torch.empty(0, self.lattice.dim)

    def _generate(self, indices: Sequence[int]) -> torch.Tensor:
        if self.device.type != "cpu" and get_worker_info() is not None:
            raise ValueError(f"SyntheticDataset generates on {self.device}, which DataLoader worker processes cannot "
                             "use: set num_workers=0 (generation on the GPU is fast) or build it with cache=True.")
        labels = None if self.labels is None else self.labels[list(indices)]
        return decode(self.generator, self.latent_codes(indices), labels, self.batch_size, self.output_device)

    def _build_cache(self, progress: bool) -> torch.Tensor:
        start = time.perf_counter()
        steps = range(0, len(self), self.batch_size)
        if progress and not has_tqdm:
            logger.warning("tqdm is not installed: no progress bar while generating the synthetic cache.")
        if progress and has_tqdm:
            steps = tqdm(steps, desc="Generating synthetic samples", unit="batch")
        images = torch.cat([self._generate(range(s, min(s + self.batch_size, len(self)))) for s in steps])
        logger.info("generated %d synthetic images (%.1f MiB) in %.1f s", len(self),
                    images.numel() * images.element_size() / 2**20, time.perf_counter() - start)
        return images

    # ------------------------------------------------------------------ items
    def _affine(self, spatial_dims: int) -> torch.Tensor:
        affine = torch.eye(4, dtype=torch.float64)
        spacing = self._spacing or [1.0] * spatial_dims
        for axis in range(min(spatial_dims, 3)):
            affine[axis, axis] = spacing[axis] if axis < len(spacing) else 1.0
        return affine

    def _item(self, index: int, image: torch.Tensor) -> dict:
        meta = {"synthetic": True, "checkpoint": self.checkpoint, "seed": self.seed, "index": index,
                "filename_or_obj": f"synthetic_{index:06d}"}
        item: dict = {"image": MetaTensor(image, affine=self._affine(image.ndim - 1), meta=meta)}
        if self.labels is not None:
            item["label"] = int(self.labels[index])
        item["synthetic"] = True
        return item

    def _check_index(self, index: int) -> int:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a SyntheticDataset of {n} samples.")
        return index % n

    def _images(self, indices: list[int]) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[indices]  # advanced indexing copies: served items never alias the cache
        return self._generate(indices)

    def _transform(self, index: int) -> dict:
        index = self._check_index(index)
        return self.transform(self._item(index, self._images([index])[0]))

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A DataLoader batch (or any list of indices), decoded in one pass."""
        indices = [self._check_index(i) for i in indices]
        images = self._images(indices)
        return [self.transform(self._item(i, image)) for i, image in zip(indices, images)]
