"""Downstream classifier (paper section 3.4, Table 2): train on synthetic labelled images, test on real ones."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.nets import Classifier

__all__ = ["classification_scores", "downstream_classifier", "train_classifier"]


def classification_scores(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy, macro precision and macro recall (classes never predicted count with precision 0)."""
    predictions, labels = predictions.long().cpu(), labels.long().cpu()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    confusion.index_put_((labels, predictions), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    tp = confusion.diagonal()
    predicted, actual = confusion.sum(0), confusion.sum(1)
    present = actual > 0
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = tp / actual.clamp_min(1)
    return {
        "accuracy": float(tp.sum() / confusion.sum()),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
    }


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 10,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                     device: torch.device | str = "cpu") -> torch.nn.Module:
    """A standard small CNN (MONAI :class:`~monai.networks.nets.Classifier`: conv 16-32-64, stride 2, PReLU,
    a linear head) trained with AdamW and cross-entropy; seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = Classifier(in_shape=tuple(images.shape[1:]), classes=num_classes, channels=(16, 32, 64),
                         strides=(2, 2, 2), num_res_units=1).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    images, labels = images.float(), labels.long()
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(images), generator=generator)
        for idx in order.split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(images[idx].to(device)), labels[idx].to(device)).backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def _predict(net: torch.nn.Module, images: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([net(images[i : i + batch_size].to(device).float()).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def downstream_classifier(
    sampler: Callable[[int, int, torch.Tensor], torch.Tensor],
    num_classes: int,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_synthetic: int = 10000,
    real_images: torch.Tensor | None = None,
    real_labels: torch.Tensor | None = None,
    epochs: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Train the classifier only on ``num_synthetic`` class-conditional samples (balanced over classes) and test
    it on real data (paper Table 2: 10k synthetic MNIST images). With ``real_images`` also train on real data
    alone and on real + synthetic, to measure what the synthetic images add as augmentation.

    Args:
        sampler: ``sampler(num, seed, labels) -> images`` of a class-conditional model, e.g.
            ``lambda n, s, y: generate(generator, n, bank.lattice, seed=s, labels=y)``.
        num_classes: number of classes.
        test_images, test_labels: real held-out data.
        num_synthetic: synthetic training images.
        real_images, real_labels: real training data for the comparison runs.
        epochs, seed, device: classifier training settings.

    Returns:
        ``{"synthetic_only": scores[, "real_only": scores, "real_plus_synthetic": scores]}`` (accuracy, macro
        precision, macro recall on the real test set).
    """
    labels = torch.arange(num_synthetic) % num_classes
    synthetic = sampler(num_synthetic, seed, labels).float().cpu()
    runs: list[tuple[str, torch.Tensor, torch.Tensor]] = [("synthetic_only", synthetic, labels)]
    if real_images is not None and real_labels is not None:
        runs.append(("real_only", real_images, real_labels))
        runs.append(("real_plus_synthetic", torch.cat([real_images, synthetic]),
                     torch.cat([real_labels.long(), labels])))
    results = {}
    for name, x, y in runs:
        net = train_classifier(x, y, num_classes, epochs=epochs, seed=seed, device=device)
        results[name] = classification_scores(_predict(net, test_images, device), test_labels, num_classes)
    return results
