"""Linear assignment between data and lattice (paper section 2.4, Algorithms 1-3, appendix G), and the step.

- :mod:`.solvers`: :func:`solve_assignment` (exact: scipy / lapx; greedy = Algorithm 3; auction) and
  :func:`assignment_cost`;
- :mod:`.auction`: Bertsekas' auction with epsilon scaling (dense and sparse), on the costs' device;
- :mod:`.sparse`: the sparse certified solver used beyond the dense memory bound;
- :mod:`.images`: :func:`collect_images`, the training images from a loader in index order;
- :mod:`.settings`: :class:`AssignmentSettings`, how one assignment is computed (shared by the step and handlers);
- :mod:`.step`: :func:`assign_codes`, one assignment of the latent bank (full batch or mini-batch, DDP-aware).
"""

from __future__ import annotations

from .auction import AuctionResult, auction_assignment, sparse_auction_assignment
from .images import collect_images
from .settings import ASSIGNMENT_COST, DEFAULT_MAX_DENSE_BYTES, AssignmentSettings
from .solvers import ASSIGNMENT_METHODS, assignment_cost, solve_assignment
from .sparse import sparse_certified_assignment
from .step import assign_codes

__all__ = [
    "ASSIGNMENT_COST",
    "ASSIGNMENT_METHODS",
    "DEFAULT_MAX_DENSE_BYTES",
    "AssignmentSettings",
    "AuctionResult",
    "assign_codes",
    "assignment_cost",
    "auction_assignment",
    "collect_images",
    "solve_assignment",
    "sparse_auction_assignment",
    "sparse_certified_assignment",
]
