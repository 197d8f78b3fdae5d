"""Real and synthetic items in one dataset, at a chosen ratio overall or per class, for a MONAI DataLoader."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

__all__ = ["MixedDataset"]

logger = logging.getLogger(__name__)


def _as_class(value, where: str) -> int:
    label = torch.as_tensor(value).reshape(-1)
    if label.numel() != 1:
        raise ValueError(f"{where} is not a single class ({label.numel()} values); per-class mixing needs one class "
                         "per item: pass real_labels.")
    return int(label[0])


def _real_labels(real: Dataset, real_labels: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """Class of every real item: given, read from the records of a MONAI dataset, or read from its items."""
    if real_labels is not None:
        labels = torch.as_tensor(real_labels, dtype=torch.long).reshape(-1)
        if len(labels) != len(real):
            raise ValueError(f"real_labels has {len(labels)} entries for {len(real)} real items.")
        return labels
    records = getattr(real, "data", None)  # MONAI datasets keep their records: no need to load the images
    if isinstance(records, Sequence) and len(records) == len(real) and all(
        isinstance(r, Mapping) and "label" in r for r in records
    ):
        return torch.tensor([_as_class(r["label"], f"the label of real record {i}") for i, r in enumerate(records)])
    logger.info("reading the labels of %d real items through their transforms; pass real_labels to skip this.",
                len(real))
    return torch.tensor([_as_class(real[i]["label"], f"the label of real item {i}") for i in range(len(real))])


class MixedDataset(Dataset):
    """Real and synthetic items side by side, ``synthetic`` flagging each, so both collate in one batch.

    The dataset holds every real item and ``round(ratio * len(real))`` synthetic ones (``ratio`` synthetic items
    per real item); with a ``{class: ratio}`` mapping, class ``c`` gets ``round(ratio[c] * n_real_c)`` synthetic
    items of class ``c`` (classes left out get none). Synthetic items are taken from ``synthetic`` in index order
    (class by class for per-class ratios), so the mix is deterministic; shuffle in the DataLoader. Items keep
    ``keys`` (default ``image`` and, for a class-conditional synthetic set, ``label``) plus ``synthetic``
    (``False`` for real items, ``True`` for synthetic ones); images become MetaTensors so that
    ``monai.data.list_data_collate`` stacks them (their meta data keep the keys both share).

    A DataLoader batch asks ``synthetic`` for all its synthetic items at once (``__getitems__``), so
    :class:`SyntheticDataset` decodes them in one pass.

    Args:
        real: a dataset of dictionary items (e.g. ``monai.data.CacheDataset`` over the training records).
        synthetic: a dataset of synthetic dictionary items, e.g. :class:`SyntheticDataset`; per-class ratios need
            its ``labels``. It must hold at least as many items (per class) as the ratio asks for.
        ratio: synthetic items per real item, overall (a float) or per class (``{class: ratio}``).
        real_labels: class of every real item, for per-class ratios; default: read from ``real.data`` records
            (MONAI datasets) without loading images, else from the items.
        keys: item keys kept from both datasets.
        check: fetch one real and one synthetic item at construction and check keys and image shapes.

    Raises:
        ValueError: a negative ratio, too few synthetic items (the message says how many to generate), per-class
            ratios without synthetic labels, or (``check``) missing keys or different image shapes.

    Example::

        from monai.data import CacheDataset, DataLoader
        from monai_neurosql.data import MixedDataset, SyntheticDataset

        real = CacheDataset(records, transform)                                   # 20 real images per class
        counts = MixedDataset.synthetic_counts([r["label"] for r in records], {c: 2.0 for c in range(10)})
        synth = SyntheticDataset.from_run("runs/fmnist_cond", num_per_class=counts, cache=True)
        mixed = MixedDataset(real, synth, ratio={c: 2.0 for c in range(10)})    # 2 synthetic per real, per class
        loader = DataLoader(mixed, batch_size=64, shuffle=True)
    """

    def __init__(
        self,
        real: Dataset,
        synthetic: Dataset,
        ratio: float | Mapping[int, float] = 1.0,
        real_labels: Sequence[int] | torch.Tensor | None = None,
        keys: Sequence[str] | None = None,
        check: bool = True,
    ) -> None:
        self.real = real
        self.synthetic = synthetic
        synthetic_labels = getattr(synthetic, "labels", None)
        self.keys = tuple(keys) if keys is not None else ("image",) + (("label",) if synthetic_labels is not None else ())
        if "synthetic" in self.keys:
            raise ValueError("keys must not include 'synthetic': MixedDataset sets it.")
        if isinstance(ratio, Mapping):
            if synthetic_labels is None:
                raise ValueError("per-class ratios need a synthetic dataset with labels (a class-conditional "
                                 "SyntheticDataset); pass one float ratio instead.")
            counts = self.synthetic_counts(_real_labels(real, real_labels), ratio)
            synthetic_labels = torch.as_tensor(synthetic_labels).reshape(-1)
            chosen = []
            for c, k in counts.items():
                rows = torch.nonzero(synthetic_labels == c).flatten()
                if len(rows) < k:
                    raise ValueError(f"ratio {ratio[c]} for class {c} needs {k} synthetic items of class {c}, the "
                                     f"synthetic dataset has {len(rows)}: build it with num_per_class={counts}.")
                chosen.extend(rows[:k].tolist())
            self.synthetic_indices = chosen
        else:
            if ratio < 0:
                raise ValueError(f"ratio must be >= 0 (synthetic items per real item), got {ratio}.")
            k = round(float(ratio) * len(real))
            if k > len(synthetic):
                raise ValueError(f"ratio {ratio} with {len(real)} real items needs {k} synthetic items, the synthetic "
                                 f"dataset has {len(synthetic)}: build it with num_samples={k}.")
            self.synthetic_indices = list(range(k))
        self.num_real = len(real)
        if check and self.num_real and self.synthetic_indices:
            self._check(self[0], self[self.num_real])

    @staticmethod
    def synthetic_counts(real_labels: Sequence[int] | torch.Tensor, ratio: Mapping[int, float]) -> dict[int, int]:
        """Synthetic items per class that ``ratio`` asks for: ``{c: round(ratio[c] * n_real_c)}``.

        Pass the result as ``num_per_class`` to :class:`SyntheticDataset` to generate exactly what the mix uses.
        """
        labels = torch.as_tensor(real_labels, dtype=torch.long).reshape(-1)
        if any(r < 0 for r in ratio.values()):
            raise ValueError(f"ratios must be >= 0 (synthetic items per real item), got {dict(ratio)}.")
        return {int(c): round(float(r) * int((labels == int(c)).sum())) for c, r in sorted(ratio.items())}

    @staticmethod
    def _check(real_item: dict, synthetic_item: dict) -> None:
        if "image" not in real_item:
            return
        real, synthetic = real_item["image"], synthetic_item["image"]
        if real.shape != synthetic.shape:
            raise ValueError(f"real images are {tuple(real.shape)} but synthetic ones {tuple(synthetic.shape)}: give "
                             "one of the datasets a transform (e.g. monai.transforms.Resized) so that they match.")
        if real.dtype != synthetic.dtype:
            raise ValueError(f"real images are {real.dtype} but synthetic ones {synthetic.dtype} in [0, 1]: scale the "
                             "real images to float in [0, 1] (e.g. monai.transforms.ScaleIntensityd).")
        if real.numel() and (real.min() < -1e-3 or real.max() > 1 + 1e-3):
            logger.warning("real image values span [%.3g, %.3g] but synthetic ones lie in [0, 1]: give both the same "
                           "intensity scaling.", float(real.min()), float(real.max()))

    @property
    def num_synthetic(self) -> int:
        """Number of synthetic items in the mix."""
        return len(self.synthetic_indices)

    def __len__(self) -> int:
        return self.num_real + self.num_synthetic

    def _locate(self, index: int) -> tuple[bool, int]:
        """``(is_synthetic, index in its source)`` of mixed item ``index``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a MixedDataset of {n} items.")
        index %= n
        if index < self.num_real:
            return False, index
        return True, self.synthetic_indices[index - self.num_real]

    def _finish(self, item, synthetic: bool) -> dict:
        source = "synthetic" if synthetic else "real"
        if not isinstance(item, Mapping):
            raise TypeError(f"MixedDataset needs dictionary items; the {source} dataset returned {type(item).__name__}.")
        missing = [k for k in self.keys if k not in item]
        if missing:
            raise ValueError(f"the {source} items lack the keys {missing}; pass keys= with keys both datasets have.")
        out = {k: item[k] for k in self.keys}
        if "image" in out:
            out["image"] = convert_to_tensor(out["image"], track_meta=True)
        out["synthetic"] = synthetic
        return out

    def __getitem__(self, index: int) -> dict:
        synthetic, i = self._locate(int(index))
        return self._finish((self.synthetic if synthetic else self.real)[i], synthetic)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """A batch, with its synthetic items fetched from the synthetic dataset in one call."""
        located = [self._locate(int(i)) for i in indices]
        fetched = {}
        for flag, source in ((False, self.real), (True, self.synthetic)):
            wanted = [i for s, i in located if s == flag]
            if wanted:
                getitems = getattr(source, "__getitems__", None)
                items = getitems(wanted) if callable(getitems) else [source[i] for i in wanted]
                fetched[flag] = iter(items)
        return [self._finish(next(fetched[flag]), flag) for flag, _ in located]
