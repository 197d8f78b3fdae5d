"""Linear assignment between data and lattice points (paper section 2.4, appendix G).

``solve_assignment(cost)`` returns, for each row ``i`` of an ``(m, k)`` cost matrix with ``m <= k``, a distinct
column ``col_ind[i]``; with the exact methods the total ``sum_i cost[i, col_ind[i]]`` is minimal.
"""

from __future__ import annotations

import numpy as np
import torch

from .auction import auction_assignment

__all__ = ["ASSIGNMENT_METHODS", "assignment_cost", "solve_assignment"]

#: Methods accepted by :func:`solve_assignment`.
ASSIGNMENT_METHODS = ("hungarian", "scipy", "lapjv", "greedy", "auction")

# from this many cost entries on, lapx's lapjvs beats scipy on real SSIM+L1 costs (docs/benchmarks.md)
_LAPJV_MIN_ENTRIES = 2048 * 2048


def _lapjv(cost: np.ndarray) -> np.ndarray:
    """Exact Jonker-Volgenant (``lap.lapjvs`` from lapx) on a float array; rectangular ``m < k`` is padded."""
    import lap  # lapx

    # lapjvs works in float32 unless asked otherwise; keep the caller's precision for float64 costs
    rows, cols = lap.lapjvs(
        np.ascontiguousarray(cost),
        extend_cost=cost.shape[0] != cost.shape[1],
        return_cost=False,
        jvx_like=True,
        prefer_float32=cost.dtype == np.float32,
    )
    col_ind = np.empty(cost.shape[0], dtype=np.int64)
    col_ind[rows] = cols
    return col_ind


def _scipy(cost: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    col_ind = np.empty(cost.shape[0], dtype=np.int64)
    col_ind[rows] = cols
    return col_ind


def _greedy_loop(cost: np.ndarray) -> np.ndarray:
    """Algorithm 3 as written: row ``i`` takes the first cheapest column not taken by rows ``0..i-1``."""
    m, k = cost.shape
    penalty = np.zeros(k, dtype=cost.dtype)  # +inf on taken columns
    row = np.empty(k, dtype=cost.dtype)
    col_ind = np.empty(m, dtype=np.int64)
    for i in range(m):
        np.add(cost[i], penalty, out=row)
        j = int(np.argmin(row))
        col_ind[i] = j
        penalty[j] = np.inf
    return col_ind


def _greedy(cost: torch.Tensor) -> torch.Tensor:
    """The paper's Algorithm 3 on ``cost``'s device, with the same result as the literal loop.

    On the CPU the literal loop over numpy rows is fastest. On other devices (CUDA) a per-row loop would
    pay a kernel launch and a sync per row, so the rows are resolved in windows instead.
    The literal loop gives row ``i`` the first (lowest-index) cheapest column not taken by rows ``0..i-1``.
    Here a window of the next ``w`` unresolved rows computes its choices among the currently free columns at
    once; a row's choice is final if no earlier row of the window chose the same column (those earlier rows
    then took other columns, which leaves its minimum and first-minimum tie-break unchanged), so the longest
    prefix of distinct choices is accepted. The window grows while prefixes are accepted whole and shrinks when
    choices collide.
    """
    if cost.device.type == "cpu":
        return torch.from_numpy(_greedy_loop(cost.detach().numpy()))
    return _greedy_windowed(cost)


def _greedy_windowed(cost: torch.Tensor) -> torch.Tensor:
    m, k = cost.shape
    device = cost.device
    col_ind = torch.empty(m, dtype=torch.long, device=device)
    taken = torch.zeros(k, dtype=torch.bool, device=device)
    inf = torch.tensor(float("inf"), dtype=cost.dtype, device=device)
    start, width = 0, 8
    while start < m:
        stop = min(m, start + width)
        span = stop - start
        block = torch.where(taken, inf, cost[start:stop])
        choice = block.argmin(dim=1)
        # position of the first row in the window that chose each column
        position = torch.arange(span, device=device)
        first = torch.full((k,), span, dtype=torch.long, device=device)
        first.scatter_reduce_(0, choice, position, reduce="amin")
        duplicate = first[choice] != position
        accepted = int(duplicate.int().argmax()) if bool(duplicate.any()) else span
        col_ind[start : start + accepted] = choice[:accepted]
        taken[choice[:accepted]] = True
        start += accepted
        width = min(1024, 2 * width) if accepted == span else max(1, accepted + 1)
    return col_ind


def _validate(cost: torch.Tensor | np.ndarray) -> None:
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2D (m, k) matrix, got shape {tuple(cost.shape)}.")
    m, k = cost.shape
    if m > k:
        raise ValueError(
            f"cost has more rows than columns ({m} > {k}): every row needs a distinct column; "
            "pass cost.T to assign columns to rows instead."
        )
    finite = torch.isfinite(cost).all() if isinstance(cost, torch.Tensor) else np.isfinite(cost).all()
    if not bool(finite):
        raise ValueError(
            "cost contains NaN or infinite values; check the generator outputs and images (a diverged "
            "generator produces NaN costs)."
        )


def solve_assignment(cost: torch.Tensor | np.ndarray, method: str = "hungarian") -> torch.Tensor:
    """Solve the linear assignment ``min_pi sum_i cost[i, pi(i)]`` over injective ``pi`` (paper eq. 4 step ii).

    Methods:

    - ``"hungarian"`` (default; the paper's name for the exact solve): the faster of two exact shortest
      augmenting path solvers as measured on real SSIM+L1 costs (``docs/benchmarks.md``): scipy's
      ``linear_sum_assignment`` below ``m * k = 2048^2`` (1.8-2.9x faster than lapx at n <= 1024 on such costs)
      and ``lapx``'s Jonker-Volgenant ``lap.lapjvs`` from there on (1.3x faster at n = 2048, 2.1x at 4096).
    - ``"scipy"``: :func:`scipy.optimize.linear_sum_assignment`, exact; the reference implementation.
    - ``"lapjv"``: ``lap.lapjvs`` at every size (fastest on unstructured costs).
    - ``"greedy"``: the paper's Algorithm 3 (rows in order, each takes its cheapest free column), run on the
      tensor's device. Not optimal: 11-21% above the optimum on real image costs and 17-19% on Gaussian point
      costs here (``docs/benchmarks.md``), so exact assignment stays the default.
    - ``"auction"``: Bertsekas' auction with epsilon scaling in torch (:mod:`monai_neurosql.assignment.auction`), on the
      tensor's device (CUDA); total cost within ``m * eps`` of the optimum (a millionth of the cost range).

    Args:
        cost: ``(m, k)`` cost matrix, ``m <= k``, torch tensor (CPU or CUDA) or numpy array. Exact solvers
            run on the CPU (a CUDA cost is copied once).
        method: one of :data:`ASSIGNMENT_METHODS`.

    Returns:
        ``col_ind``: LongTensor of shape ``(m,)``, distinct columns, row ``i`` gets ``col_ind[i]``; on the
        cost's device (CPU for numpy input).

    Raises:
        ValueError: non-2D input, NaN or infinite costs, more rows than columns, unknown method.

    Example::

        >>> cost = torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
        >>> solve_assignment(cost)
        tensor([1, 0, 2])
    """
    if method not in ASSIGNMENT_METHODS:
        raise ValueError(f"method must be one of {ASSIGNMENT_METHODS}, got {method!r}.")
    if not isinstance(cost, (torch.Tensor, np.ndarray)):
        raise TypeError(f"cost must be a torch.Tensor or numpy.ndarray, got {type(cost).__name__}.")
    _validate(cost)
    device = cost.device if isinstance(cost, torch.Tensor) else torch.device("cpu")
    if cost.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    if method in ("greedy", "auction"):
        tensor = torch.as_tensor(cost)
        tensor = tensor if tensor.is_floating_point() else tensor.double()
        if method == "greedy":
            return _greedy(tensor)
        return auction_assignment(tensor).col_ind
    array = cost.detach().cpu().numpy() if isinstance(cost, torch.Tensor) else np.asarray(cost)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    use_lapjv = method == "lapjv" or (method == "hungarian" and array.size >= _LAPJV_MIN_ENTRIES)
    col_ind = _lapjv(array) if use_lapjv else _scipy(array)
    return torch.from_numpy(col_ind).to(device)


def assignment_cost(cost: torch.Tensor, col_ind: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cost of an assignment: ``cost[i, col_ind[i]]`` reduced by ``"mean"`` (default), ``"sum"`` or ``"none"``."""
    cost = torch.as_tensor(cost)
    values = cost[torch.arange(cost.shape[0], device=cost.device), col_ind.to(cost.device)]
    if reduction == "none":
        return values
    return values.double().sum() if reduction == "sum" else values.double().mean()
