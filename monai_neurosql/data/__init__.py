from __future__ import annotations

from .loaders import assignment_loader, train_loader

__all__ = ["assignment_loader", "train_loader"]
