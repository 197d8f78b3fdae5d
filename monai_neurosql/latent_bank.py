"""The latent bank: the quantile lattice and the current codes ``Z_hat`` of the training images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .assignment.solvers import solve_assignment
from .lattice import PRIORS, QuantileLattice

__all__ = ["LatentBank", "group_positions"]


def group_positions(
    labels: torch.Tensor, groups: Sequence[int] | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(group, positions)`` with ``positions = nonzero(labels == group)``, group by group.

    The one place where rows are split by class: the bank's groups, the rows of a batch, the classes of images.

    Args:
        labels: ``(n,)`` integer group of every position.
        groups: the groups to yield, in this order (possibly with no positions); default the distinct labels,
            ascending.
    """
    for g in torch.unique(labels).tolist() if groups is None else groups:
        yield int(g), torch.nonzero(labels == g).flatten()


class LatentBank(nn.Module):
    """Lattice ``Q`` (n, d), codes ``Z_hat`` (n, d) and the current assignment ``pi`` (n,), as buffers.

    Row ``i`` belongs to the training image with dataset index ``i``; the trainer looks its code up as
    ``bank.codes[index]``. After an assignment ``pi`` the momentum update of Algorithm 1 (line 7) is
    ``Z_hat_i <- rho * Q_{pi(i)} + (1 - rho) * Z_hat_i``. The bank is an ``nn.Module``, so it is saved in
    checkpoints and moved with ``.to(device)``.

    Class-conditional banks (:meth:`class_conditional`) give every class its own lattice of the prior, as many
    points as it has images; codes are assigned within a class only (``data_groups``/``lattice_groups``).

    Args:
        lattice: the :class:`QuantileLattice` (n points).
        init: initial permutation ``pi^(0)``: ``"random"`` (seeded) or ``"identity"``; for the PCA-sorted start
            of Algorithm 1 line 2 call :meth:`init_pca` with the images afterwards.
        seed: seed of the random initial permutation.
        data_groups: class of every data row (``None``: one group).
        lattice_groups: class of every lattice point; must hold the same number of points per class as
            ``data_groups`` holds rows.

    Example::

        bank = LatentBank(QuantileLattice.sobol_gaussian(n=len(dataset), d=16, seed=0), seed=0)
        z = bank.codes[batch["index"]]
    """

    def __init__(
        self,
        lattice: QuantileLattice,
        init: str = "random",
        seed: int = 0,
        data_groups: Sequence[int] | torch.Tensor | None = None,
        lattice_groups: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        n = lattice.n
        self.prior = lattice.prior
        self.register_buffer("lattice_points", lattice.points.clone())
        self.register_buffer("codes", torch.zeros_like(lattice.points))
        self.register_buffer("assignment", torch.zeros(n, dtype=torch.long))
        if (data_groups is None) != (lattice_groups is None):
            raise ValueError("pass both data_groups and lattice_groups, or neither.")
        if data_groups is None:
            data_groups = lattice_groups = torch.zeros(n, dtype=torch.long)
        data_groups = torch.as_tensor(data_groups, dtype=torch.long).reshape(-1)
        lattice_groups = torch.as_tensor(lattice_groups, dtype=torch.long).reshape(-1)
        if data_groups.numel() != n or lattice_groups.numel() != n:
            raise ValueError(
                f"data_groups and lattice_groups need one entry per lattice point ({n}), got "
                f"{data_groups.numel()} and {lattice_groups.numel()}."
            )
        if not torch.equal(torch.bincount(data_groups, minlength=1), torch.bincount(lattice_groups, minlength=1)):
            raise ValueError("every class needs as many lattice points as data rows.")
        self.register_buffer("data_groups", data_groups)
        self.register_buffer("lattice_groups", lattice_groups)
        if init == "random":
            self.init_random(seed)
        elif init == "identity":
            _, rows, lattice = zip(*self.iter_groups())  # the i-th row of a group gets its i-th lattice point
            self._set_assignment(torch.cat(rows), torch.cat(lattice))
        else:
            raise ValueError(f"init must be 'random' or 'identity', got {init!r}; use init_pca() for PCA-sorted.")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def create(cls, n: int, d: int, kind: str = "sobol_gaussian", seed: int = 0, init: str = "random") -> LatentBank:
        """An unconditional bank of ``n`` codes in ``R^d`` on a lattice built by :meth:`QuantileLattice.create`."""
        return cls(QuantileLattice.create(kind, n, d, seed), init=init, seed=seed)

    @classmethod
    def class_conditional(
        cls, labels: Sequence[int] | torch.Tensor, d: int, kind: str = "sobol_gaussian", seed: int = 0
    ) -> LatentBank:
        """A bank whose class ``c`` gets its own lattice of ``#{i: labels[i] = c}`` points (seed ``seed + c``).

        Every class lattice quantizes the whole prior, so ``generate(..., labels=c)`` (z from the prior, label
        c) matches what class ``c`` was trained on.
        """
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 0 or labels.min() < 0:
            raise ValueError("labels must be a non-empty sequence of non-negative class indices.")
        counts = torch.bincount(labels)
        parts, groups = [], []
        for c, count in enumerate(counts.tolist()):
            if count:
                parts.append(QuantileLattice.create(kind, count, d, seed + c).points)
                groups.append(torch.full((count,), c, dtype=torch.long))
        prior = QuantileLattice.create(kind, 1, d, seed).prior
        lattice = QuantileLattice(torch.cat(parts), prior=prior)
        return cls(lattice, seed=seed, data_groups=labels, lattice_groups=torch.cat(groups))

    @classmethod
    def from_state_dict(cls, state: dict) -> LatentBank:
        """Rebuild a bank from its ``state_dict`` (e.g. ``torch.load("model.pt", weights_only=True)["bank"]``)."""
        keys = ("lattice_points", "codes", "assignment", "data_groups", "lattice_groups")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"not a LatentBank state_dict: missing {missing}.")
        prior = state.get("_extra_state", {}).get("prior", "gaussian")
        bank = cls(QuantileLattice(state["lattice_points"], prior), init="identity",
                   data_groups=state["data_groups"], lattice_groups=state["lattice_groups"])
        bank.load_state_dict(state)
        return bank

    # ------------------------------------------------------------------ views
    @property
    def n(self) -> int:
        return int(self.codes.shape[0])

    @property
    def dim(self) -> int:
        return int(self.codes.shape[1])

    @property
    def lattice(self) -> QuantileLattice:
        """The lattice as a :class:`QuantileLattice` (its prior drives sampled-z generation)."""
        return QuantileLattice(self.lattice_points.detach().cpu(), prior=self.prior)

    @property
    def conditional(self) -> bool:
        """Whether codes are assigned within classes."""
        return bool((self.data_groups != self.data_groups[0]).any()) if self.n else False

    def groups(self) -> list[int]:
        """The classes (a single group ``0`` for unconditional banks)."""
        return torch.unique(self.data_groups).tolist()

    def data_rows(self, group: int) -> torch.Tensor:
        """Data rows (dataset indices) of ``group``."""
        return next(group_positions(self.data_groups, [group]))[1]

    def lattice_rows(self, group: int) -> torch.Tensor:
        """Lattice indices owned by ``group``."""
        return next(group_positions(self.lattice_groups, [group]))[1]

    def iter_groups(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(group, data rows, lattice indices)`` for every group."""
        lattice = dict(group_positions(self.lattice_groups))
        for g, rows in group_positions(self.data_groups):
            yield g, rows, lattice[g]

    # ------------------------------------------------------------------ updates
    def _set_assignment(self, rows: torch.Tensor, lattice_idx: torch.Tensor) -> None:
        rows, lattice_idx = rows.to(self.codes.device), lattice_idx.to(self.codes.device)
        self.assignment[rows] = lattice_idx
        self.codes[rows] = self.lattice_points[lattice_idx]

    def init_random(self, seed: int = 0) -> None:
        """Codes = a random permutation of the lattice within each group (Algorithm 1 line 2, random start)."""
        g = torch.Generator().manual_seed(seed)
        for _, rows, lat in self.iter_groups():
            self._set_assignment(rows, lat[torch.randperm(len(lat), generator=g).to(lat.device)])

    def init_pca(self, images: torch.Tensor) -> None:
        """PCA-sorted start (Algorithm 1 line 2): match the images' top-``d`` PCA scores to the lattice.

        The scores of each group are whitened and optimally assigned to the group's lattice points under the
        squared Euclidean cost, so images that are close in PCA space start with close codes.

        Args:
            images: ``n x C x [SPATIAL]`` images in dataset-index order (row ``i`` = index ``i``).
        """
        if images.shape[0] != self.n:
            raise ValueError(f"init_pca needs one image per bank row ({self.n}), got {images.shape[0]}.")
        flat = images.reshape(self.n, -1).double().cpu()
        for _, rows, lat in self.iter_groups():
            x = flat[rows.cpu()]
            x = x - x.mean(0, keepdim=True)
            q = min(self.dim, x.shape[0], x.shape[1])
            u, _, _ = torch.linalg.svd(x, full_matrices=False)
            scores = torch.zeros(x.shape[0], self.dim, dtype=torch.float64)
            scores[:, :q] = u[:, :q] * np.sqrt(max(1, x.shape[0] - 1))  # unit variance per component
            points = self.lattice_points[lat].double().cpu()
            points = (points - points.mean(0)) / points.std(0).clamp_min(1e-12) if len(lat) > 1 else points
            cost = torch.cdist(scores, points).pow(2)
            self._set_assignment(rows, lat[solve_assignment(cost).to(lat.device)])

    @torch.no_grad()
    def update(self, rows: torch.Tensor, lattice_idx: torch.Tensor, momentum: float = 0.7) -> float:
        """Momentum update ``Z_hat[rows] <- rho * Q[lattice_idx] + (1 - rho) * Z_hat[rows]`` (Algorithm 1 line 7).

        Args:
            rows: data rows (dataset indices) that were assigned.
            lattice_idx: the lattice point assigned to each row.
            momentum: ``rho`` in ``(0, 1]``; ``1`` jumps to the lattice point. The paper uses 0.7.

        Returns:
            The fraction of ``rows`` whose assigned lattice point changed.
        """
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum}.")
        rows = torch.as_tensor(rows, device=self.codes.device).long()
        lattice_idx = torch.as_tensor(lattice_idx, device=self.codes.device).long()
        if rows.shape != lattice_idx.shape:
            raise ValueError(f"rows and lattice_idx must have the same shape, got {rows.shape} and "
                             f"{lattice_idx.shape}.")
        if rows.numel() == 0:
            return 0.0
        if not torch.equal(self.data_groups[rows], self.lattice_groups[lattice_idx]):
            raise ValueError("an assignment crossed classes: every row must get a lattice point of its own class.")
        moved = (self.assignment[rows] != lattice_idx).double().mean().item()
        self.codes[rows] = momentum * self.lattice_points[lattice_idx] + (1.0 - momentum) * self.codes[rows]
        self.assignment[rows] = lattice_idx
        return moved

    # ------------------------------------------------------------------ persistence of the prior name
    def get_extra_state(self) -> dict:
        return {"prior": self.prior}

    def set_extra_state(self, state: dict) -> None:
        prior = state.get("prior", "gaussian")
        if prior not in PRIORS:
            raise ValueError(f"checkpoint names an unknown prior {prior!r}.")
        self.prior = prior

    def extra_repr(self) -> str:
        return f"n={self.n}, d={self.dim}, prior={self.prior!r}, groups={len(self.groups())}"
