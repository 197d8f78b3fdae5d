"""Quantile lattices of the latent prior (NeuroSQL paper, sections 2.2-2.3 and appendix I)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import qmc

__all__ = ["PRIORS", "QuantileLattice"]

#: Priors a lattice can quantize, with the distribution ``QuantileLattice.sample`` draws from.
PRIORS = ("gaussian", "uniform_cube", "uniform_ball")

# Scrambled Sobol points lie in [0, 1); keep them off the edges so that the inverse CDF stays finite.
_EPS = 1e-7


def _sobol(n: int, d: int, seed: int | None) -> np.ndarray:
    """The first ``n`` points of a scrambled Sobol sequence in ``[0, 1)^d`` (float64, shape ``(n, d)``).

    ``random_base2`` draws the next power of two and we keep the first ``n``: a prefix of a Sobol sequence is
    still low-discrepancy, and scipy's balance warning for non-powers of two does not apply to prefixes.
    """
    if n < 1:
        raise ValueError(f"the lattice size n must be a positive integer, got {n}.")
    if d < 1:
        raise ValueError(f"the latent dimension d must be a positive integer, got {d}.")
    if d > qmc.Sobol.MAXDIM:
        raise ValueError(f"Sobol lattices support d <= {qmc.Sobol.MAXDIM}, got d={d}.")
    engine = qmc.Sobol(d, scramble=True, seed=seed)
    points = engine.random_base2(max(0, math.ceil(math.log2(n))))[:n]
    return np.clip(points, _EPS, 1.0 - _EPS)


class QuantileLattice:
    """A fixed set of ``n`` quantile points ``Q`` of a latent prior in ``R^d``.

    NeuroSQL never infers latent codes with an encoder: the codes of the ``n`` training images are a
    permutation of ``Q`` (paper eq. 2), found by linear assignment. The lattice must therefore match its prior
    as closely as ``n`` points can, which low-discrepancy (Sobol) points do better than an i.i.d. sample.

    Build one with a constructor:

    - :meth:`sobol_gaussian`: scrambled Sobol points pushed coordinate-wise through the standard normal
      inverse CDF (the paper's default, appendix I); prior ``N(0, I)``.
    - :meth:`uniform_cube`: Sobol points in ``[0, 1]^d`` (appendix D); prior ``U([0, 1]^d)``.
    - :meth:`uniform_ball`: a low-discrepancy grid of the open unit ball (section 2.3); prior uniform on the ball.
    - :meth:`quantiles_1d`: the exact univariate quantiles ``F^{-1}(i / (n + 1))`` (section 2.2).

    Args:
        points: ``(n, d)`` lattice points.
        prior: one of :data:`PRIORS`, the distribution the points quantize.

    Example::

        lattice = QuantileLattice.sobol_gaussian(n=2000, d=16, seed=0)
        lattice.points.shape            # torch.Size([2000, 16])
        z = lattice.sample(8, generator=torch.Generator().manual_seed(1))  # fresh codes from N(0, I)
    """

    def __init__(self, points: torch.Tensor | np.ndarray, prior: str = "gaussian") -> None:
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}.")
        points = torch.as_tensor(points, dtype=torch.float32)
        if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] < 1:
            raise ValueError(f"lattice points must be a non-empty (n, d) array, got shape {tuple(points.shape)}.")
        if not torch.isfinite(points).all():
            raise ValueError("lattice points must be finite.")
        self.points = points.contiguous()
        self.prior = prior

    # ------------------------------------------------------------------ constructors
    @classmethod
    def sobol_gaussian(cls, n: int, d: int, seed: int | None = 0) -> QuantileLattice:
        """Scrambled Sobol points mapped through ``Phi^{-1}`` coordinate-wise: a lattice of ``N(0, I_d)``.

        Args:
            n: number of points (any positive integer).
            d: latent dimension.
            seed: scrambling seed; the same seed gives the same lattice.
        """
        return cls(ndtri(_sobol(n, d, seed)), prior="gaussian")

    @classmethod
    def uniform_cube(cls, n: int, d: int, seed: int | None = 0) -> QuantileLattice:
        """Scrambled Sobol points in ``[0, 1]^d``: a lattice of the uniform distribution on the cube.

        Args:
            n: number of points (any positive integer).
            d: latent dimension.
            seed: scrambling seed.
        """
        return cls(_sobol(n, d, seed), prior="uniform_cube")

    @classmethod
    def uniform_ball(cls, n: int, d: int, seed: int | None = 0) -> QuantileLattice:
        """A low-discrepancy grid of the open unit ball ``{z : |z| < 1}`` (paper section 2.3).

        A scrambled Sobol point ``(u_0, u_1, ..., u_d)`` in ``[0, 1)^{d+1}`` gives the radius ``r = u_0^{1/d}``
        and the direction ``v / |v|`` with ``v_j = Phi^{-1}(u_j)``. Since ``P(|Z| <= r) = r^d`` for ``Z``
        uniform on the ball and ``v / |v|`` is uniform on the sphere for Gaussian ``v``, the points are
        distributed uniformly in the ball, with the low discrepancy of the underlying Sobol points.

        Args:
            n: number of points (any positive integer).
            d: latent dimension.
            seed: scrambling seed.
        """
        u = _sobol(n, d + 1, seed)
        radius = u[:, :1] ** (1.0 / d)
        direction = ndtri(u[:, 1:])
        direction /= np.linalg.norm(direction, axis=1, keepdims=True).clip(min=1e-12)
        return cls(radius * direction, prior="uniform_ball")

    @classmethod
    def quantiles_1d(cls, n: int, prior: str = "gaussian") -> QuantileLattice:
        """The univariate quantiles ``Q_i = F^{-1}(i / (n + 1))``, ``i = 1..n`` (paper section 2.2, ``d = 1``).

        Args:
            n: number of points.
            prior: ``"gaussian"`` (``F = Phi``), ``"uniform_cube"`` (``U[0, 1]``) or ``"uniform_ball"``
                (``U(-1, 1)``, the one-dimensional unit ball).
        """
        if n < 1:
            raise ValueError(f"the lattice size n must be a positive integer, got {n}.")
        probs = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
        if prior == "gaussian":
            values = ndtri(probs)
        elif prior == "uniform_cube":
            values = probs
        elif prior == "uniform_ball":
            values = 2.0 * probs - 1.0
        else:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}.")
        return cls(values[:, None], prior=prior)

    @classmethod
    def create(cls, kind: str, n: int, d: int, seed: int | None = 0) -> QuantileLattice:
        """Build a lattice by name, for configs: ``kind`` is a constructor name or a prior name.

        ``"sobol_gaussian"``/``"gaussian"``, ``"uniform_cube"``, ``"uniform_ball"``, or ``"quantiles_1d"``
        (``d`` must be 1; Gaussian prior).
        """
        builders = {
            "sobol_gaussian": cls.sobol_gaussian,
            "gaussian": cls.sobol_gaussian,
            "uniform_cube": cls.uniform_cube,
            "uniform_ball": cls.uniform_ball,
        }
        if kind == "quantiles_1d":
            if d != 1:
                raise ValueError(f"the 'quantiles_1d' lattice needs d=1, got d={d}.")
            return cls.quantiles_1d(n)
        if kind not in builders:
            raise ValueError(f"unknown lattice kind {kind!r}; expected one of {sorted(builders) + ['quantiles_1d']}.")
        return builders[kind](n, d, seed)

    # ------------------------------------------------------------------ properties and sampling
    @property
    def n(self) -> int:
        """Number of lattice points."""
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        """Latent dimension ``d``."""
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"QuantileLattice(n={self.n}, d={self.dim}, prior={self.prior!r})"

    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw ``num`` i.i.d. codes from the lattice's prior (the *sampled-z* generation mode).

        Args:
            num: number of codes.
            generator: a ``torch.Generator`` for reproducible draws (CPU generator; the result is moved to
                ``device``), so that the same seed gives the same codes on every device.
            device: device of the returned ``(num, d)`` float tensor.
        """
        if num < 0:
            raise ValueError(f"num must be >= 0, got {num}.")
        shape = (num, self.dim)
        if self.prior == "gaussian":
            z = torch.randn(shape, generator=generator)
        elif self.prior == "uniform_cube":
            z = torch.rand(shape, generator=generator)
        else:
            direction = torch.randn(shape, generator=generator)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            radius = torch.rand((num, 1), generator=generator) ** (1.0 / self.dim)
            z = radius * direction
        return z.to(device) if device is not None else z
