"""Common base of the NeuroSQL generators: latent (and class) conditioning, output size and activation."""

from __future__ import annotations

import functools
import inspect
import json
import math
import pydoc
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.networks.layers.factories import Act
from monai.utils import ensure_tuple_rep
from torch import nn

if TYPE_CHECKING:  # typing.Self is Python 3.11+; annotations are not evaluated (from __future__)
    from typing import Self

__all__ = [
    "LatentGenerator",
    "count_parameters",
    "generator_args",
    "generator_builder",
    "generator_class",
    "generator_path",
]


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``, the capacity measure of the paper's Tables 1 and 4."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


#: the generator of runs whose ``data_info.json`` predates the ``"network"`` entry (the bundles' only one then)
DEFAULT_GENERATOR = "monai_neurosql.networks.ConvGenerator"


def generator_path(network: nn.Module) -> str:
    """The import path of ``network``'s class (a DDP wrapper is looked through), as the bundles' ``train.json``
    writes it to ``data_info.json`` (``"network"``) so that inference builds the same generator."""
    network = getattr(network, "module", network)
    return f"{type(network).__module__}.{type(network).__qualname__}"


def generator_class(data_info: Mapping | None = None) -> type[LatentGenerator]:
    """The generator class a run was trained with: ``data_info["network"]`` (:func:`generator_path`), else
    :class:`~monai_neurosql.networks.ConvGenerator` (runs written before the entry existed).

    Raises:
        ValueError: the recorded path does not import as a :class:`LatentGenerator` subclass.

    Example::

        net = generator_class(read_data_info("models/data_info.json"))(spatial_dims=2, latent_size=16, ...)
    """
    path = str((data_info or {}).get("network") or DEFAULT_GENERATOR)
    found = pydoc.locate(path)
    if not (isinstance(found, type) and issubclass(found, LatentGenerator)):  # a bad value in the file, not a type
        raise ValueError(  # noqa: TRY004
            f"data_info.json names the generator {path!r}, which does not import as a NeuroSQL generator class (a "
            "monai_neurosql.networks.LatentGenerator subclass): install the package that defines it, or correct "
            "'network' in data_info.json (or pass --network_def#_target_ to the command)."
        )
    return found


#: constructor arguments that ``data_info.json`` holds as entries of their own (the bundles' shared settings), so
#: :func:`generator_args` leaves them out
SHARED_ARGUMENTS = ("spatial_dims", "latent_size", "out_channels", "spatial_size", "channels", "num_classes")


def generator_args(network: nn.Module) -> dict[str, Any]:
    """The constructor settings ``network`` was built with, other than the :data:`SHARED_ARGUMENTS` (defaults
    included, e.g. ``kernel_size``, ``act``, ``norm`` and ``out_act``, the FiLM U-Net's ``film_hidden``), as
    plain JSON values: what the bundles' ``train.json`` writes to ``data_info.json`` (``"network_args"``) so
    that inference builds the network it trained, not one with the class's defaults (a different activation
    loads the same weights and silently gives other images). A DDP wrapper is looked through. A setting that
    has no JSON form (e.g. an object passed to a subclass's own setting) is left out with a warning naming it.

    Example::

        generator_args(FiLMUNetGenerator(2, 16, film_hidden=64))["film_hidden"]  # 64
    """
    network = getattr(network, "module", network)
    args = {}
    for name, value in getattr(network, "init_arguments", {}).items():
        if name in SHARED_ARGUMENTS:
            continue
        try:
            args[name] = json.loads(json.dumps(value, default=_plain))
        except (TypeError, ValueError):
            warnings.warn(
                f"{type(network).__name__}'s setting {name}={value!r} has no JSON form and is not recorded in "
                f"data_info.json: pass it again when loading the run (--network_def#{name}, or generator=).",
                stacklevel=2,
            )
    return args


def _plain(value: Any) -> Any:
    """JSON form of numpy and torch scalars and arrays (``json.dumps``'s ``default``); ``TypeError`` otherwise."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def generator_builder(data_info: Mapping | None = None) -> Callable[..., LatentGenerator]:
    """The generator class a run was trained with (:func:`generator_class`) with its recorded settings
    (``data_info["network_args"]``, :func:`generator_args`) bound: call it with the shared settings, as
    ``bundles/*/configs/inference.json`` does (``"_target_": "$monai_neurosql.networks.generator_builder(@data_info)"``);
    keywords given in the call override the recorded ones.

    Example::

        net = generator_builder(info)(spatial_dims=2, latent_size=16, out_channels=1, spatial_size=64, channels=[...])
    """
    cls = generator_class(data_info)
    args = dict((data_info or {}).get("network_args") or {})
    return functools.partial(cls, **args) if args else cls


class LatentGenerator(nn.Module):
    """Base class of generators ``G: R^d (x classes) -> BxCx[SPATIAL]`` (the only network of NeuroSQL).

    Subclasses build ``self.body`` mapping the conditioned latent ``(B, input_size)`` to a feature map at least as
    large as ``spatial_size``; this class checks the arguments every generator shares (the one place they are
    handled: a subclass takes ``spatial_dims, latent_size, out_channels, spatial_size, channels``, then its own
    architecture settings, and passes the conditioning and output keywords on as ``**kwargs``; the first five are
    spelled in every subclass, as MONAI's networks spell theirs, so that positional calls and ``help()`` keep
    MONAI's order ``spatial_dims, latent_size, out_channels, ...``), embeds class
    labels, center-crops to ``spatial_size`` and applies the output activation (sigmoid: images in ``[0, 1]``).

    Args:
        spatial_dims: 2 or 3.
        latent_size: latent dimension ``d``.
        out_channels: image channels. Default 1.
        spatial_size: output size (int or per-axis sequence); any size, not only powers of two. Default 64.
        channels: feature widths of the subclass's levels (checked here, kept as ``self.channels``).
        num_classes: number of classes for class-conditional generation (``None``: unconditional).
        class_embed_size: size of the learned class embedding concatenated to ``z``. Default ``latent_size``.
        out_act: output activation name (MONAI ``Act`` factory) or ``None`` for raw outputs. Default sigmoid.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
        except TypeError:  # __init__ raises it with its own message (or copy/pickle re-creating without arguments)
            return self
        bound.apply_defaults()
        arguments: dict[str, Any] = {}
        for name, param in list(bound.signature.parameters.items())[1:]:
            if param.kind is param.VAR_KEYWORD:
                arguments.update(bound.arguments.get(name, {}))
            elif param.kind is not param.VAR_POSITIONAL:
                arguments[name] = bound.arguments[name]
        for name, param in inspect.signature(LatentGenerator.__init__).parameters.items():
            if param.kind is param.KEYWORD_ONLY:  # the base's settings a subclass takes through **kwargs
                arguments.setdefault(name, param.default)
        # every constructor argument by name, defaults included, set before __init__ runs (generator_args reads it)
        object.__setattr__(self, "init_arguments", arguments)
        return self

    def __init__(
        self,
        spatial_dims: int,
        latent_size: int,
        out_channels: int = 1,
        spatial_size: Sequence[int] | int = 64,
        channels: Sequence[int] = (32,),
        *,
        num_classes: int | None = None,
        class_embed_size: int | None = None,
        out_act: str | tuple | None = "sigmoid",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if latent_size < 1:
            raise ValueError(f"latent_size must be a positive integer, got {latent_size}.")
        if out_channels < 1:
            raise ValueError(f"out_channels must be a positive integer, got {out_channels}.")
        size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, spatial_dims))
        if any(s < 1 for s in size):
            raise ValueError(f"spatial_size must be positive, got {spatial_size}.")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be None or a positive integer, got {num_classes}.")
        self.channels = self.check_channels(channels)
        self.spatial_dims = spatial_dims
        self.latent_size = latent_size
        self.out_channels = out_channels
        self.spatial_size = size
        self.num_classes = num_classes
        embed = 0
        self.class_embedding: nn.Embedding | None = None
        if num_classes is not None:
            embed = latent_size if class_embed_size is None else int(class_embed_size)
            self.class_embedding = nn.Embedding(num_classes, embed)
        self.input_size = latent_size + embed
        if out_act is None:
            self.out_act: nn.Module = nn.Identity()
        else:
            name, kwargs = (out_act, {}) if isinstance(out_act, str) else (out_act[0], dict(out_act[1]))
            self.out_act = Act[name](**kwargs)

    @staticmethod
    def check_channels(channels: Sequence[int]) -> tuple[int, ...]:
        """``channels`` as a tuple of positive ints; ``ValueError`` otherwise."""
        channels = tuple(int(c) for c in channels)
        if len(channels) < 1 or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty sequence of positive widths, got {channels}.")
        return channels

    def build_projection(self) -> None:
        """The linear projection of the latent input to a ``channels[0] x base`` map that ``len(channels) - 1``
        doublings take to at least ``spatial_size`` (sets ``base`` and ``project``)."""
        self.base = self.base_size(self.spatial_size, len(self.channels) - 1)
        self.project = nn.Linear(self.input_size, self.channels[0] * math.prod(self.base))

    def project_to_base(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, input_size) -> B x channels[0] x base``."""
        return self.project(h).reshape(h.shape[0], self.channels[0], *self.base)

    @staticmethod
    def base_size(spatial_size: Sequence[int], num_upsamples: int) -> tuple[int, ...]:
        """Smallest start size that reaches at least ``spatial_size`` after ``num_upsamples`` doublings."""
        return tuple(max(1, math.ceil(s / 2**num_upsamples)) for s in spatial_size)

    def condition(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """``z`` (and the embedding of ``labels``) as the ``(B, input_size)`` network input."""
        # TorchScript tracing and torch.export trace shapes symbolically: no data-dependent Python checks then
        tracing = torch.jit.is_tracing() or torch.compiler.is_exporting()
        if not tracing and (z.ndim != 2 or z.shape[1] != self.latent_size):
            raise ValueError(f"z must have shape (B, {self.latent_size}), got {tuple(z.shape)}.")
        if self.class_embedding is None:
            if labels is not None:
                raise ValueError("labels were given to an unconditional generator; build it with num_classes.")
            return z
        if labels is None:
            raise ValueError(f"this generator is class-conditional (num_classes={self.num_classes}): pass labels.")
        labels = torch.as_tensor(labels, device=z.device).long().reshape(-1)
        if not tracing and labels.shape[0] != z.shape[0]:
            raise ValueError(f"got {labels.shape[0]} labels for {z.shape[0]} codes.")
        if not tracing and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got {labels.unique().tolist()}.")
        return torch.cat([z, self.class_embedding(labels).to(z.dtype)], dim=1)

    def finish(self, features: torch.Tensor) -> torch.Tensor:
        """Center-crop ``features`` to ``spatial_size`` and apply the output activation."""
        slices = [slice(None), slice(None)]
        for have, want in zip(features.shape[2:], self.spatial_size):
            start = (have - want) // 2
            slices.append(slice(start, start + want))
        return self.out_act(features[tuple(slices)])

    def body(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``z``: ``(B, latent_size)``; ``labels``: ``(B,)`` class indices for conditional generators.

        Returns: ``B x out_channels x [spatial_size]`` images (in ``[0, 1]`` with the default sigmoid).
        """
        return self.finish(self.body(self.condition(z, labels)))
