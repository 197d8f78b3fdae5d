"""Optional dependencies: imported only where they are used, and a missing one names the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise an ``ImportError`` that says which extra of ``monai-neurosql`` installs it.

    The heavy optional parts (TensorBoard, nilearn, lpips, einops, medmnist) are not installed by a plain
    ``pip install monai-neurosql``; the code that needs one calls this first, so the user learns what to install
    before any long work starts.

    Args:
        module: the module to import, e.g. ``"lpips"`` or ``"torch.utils.tensorboard"``.
        extra: the ``pyproject.toml`` extra that installs it, e.g. ``"lpips"`` or ``"bundles"``.
        purpose: what needs it, for the message, e.g. ``"LPIPS"``.
        package: the package to name when it differs from the top-level module (``"tensorboard"`` for
            ``torch.utils.tensorboard``). Default: the top-level name of ``module``.

    Returns:
        The imported module.

    Raises:
        ImportError: ``module`` cannot be imported; the message names the package and the extra.

    Example::

        lpips = require("lpips", "lpips", "LPIPS")
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        name = package or module.split(".")[0]
        raise ImportError(
            f"{purpose} needs the '{name}' package, which is not installed: pip install "
            f"\"monai-neurosql[{extra}]\" (or pip install {name}). ({type(err).__name__}: {err})"
        ) from err
