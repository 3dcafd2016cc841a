"""timm backbones: any timm model built with ``num_classes=0`` (:class:`TimmBackbone`).

Blocks follow ``model.feature_info`` and early features come from ``forward_intermediates``, so
every timm model with those works without knowing its class; only :meth:`TimmBackbone.split_steps`
(the cached frozen part) needs to know the class, in :func:`_step_modules`. Weights come from the
Hugging Face hub cache (or timm's legacy torch.hub cache), downloading when a network is there.
"""

from __future__ import annotations

import functools
import logging
import os
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from petsml.models.base import (
    Backbone,
    BackboneError,
    BackboneFamily,
    BackboneRequest,
    Preprocessing,
    SplitSteps,
    pool,
    three_channels,
)
from petsml.models.hub import socket_timeout, unavailable, unreachable

log = logging.getLogger(__name__)


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


def _step_modules(model: nn.Module) -> list[nn.Module] | None:
    """The timm classes whose ``forward_features`` is a plain chain of these modules (a network
    that says so itself, :class:`~petsml.models.efficientnet_lite.LiteNet`, imports no timm)."""
    own = getattr(model, "step_modules", None)
    if callable(own):
        return list(own())
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    m: Any = model
    if isinstance(m, EfficientNet):
        return [m.conv_stem, m.bn1, *m.blocks, m.conv_head, m.bn2]
    if isinstance(m, ResNet):
        return [m.conv1, m.bn1, m.act1, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]
    return None


class TimmBackbone(Backbone):
    """Any timm model built with ``num_classes=0``.

    Blocks follow ``model.feature_info``: block ``i`` holds the parameters up to (and including)
    feature module ``i``, so its output is ``forward_intermediates`` index ``i``; the parameters
    after the last feature module (e.g. EfficientNet's ``conv_head``, a final norm) form a last
    block whose output is the pooled penultimate vector.
    """

    def __init__(
        self, model: nn.Module, preprocessing: Preprocessing, request: BackboneRequest
    ) -> None:
        super().__init__()
        if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
            raise BackboneError(
                f"timm model {request.model_name!r} has no forward_intermediates/feature_info, "
                "which petsml needs for early features and blocks; choose another model.backbone."
            )
        self.model = model
        self.preprocessing = preprocessing
        self._partition()
        self._set_common(request, len(self._levels))
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

    def split_steps(self) -> SplitSteps | None:
        """EfficientNet and ResNet as a chain of their modules + timm's pooling head.

        None for other classes and under gradient checkpointing (its forward is not the chain).
        """
        m: Any = self.model
        if getattr(m, "grad_checkpointing", False):
            return None
        modules = _step_modules(m)
        if modules is None:
            return None
        return SplitSteps(modules, functools.partial(m.forward_head, pre_logits=True), None)

    def forward_blocks(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Block ``i``'s output is what ``forward_early`` pools at ``early_block=i``; the head
        block's is the penultimate vector itself."""
        wanted = [level for level in self._levels if level is not None]
        final, inter = self.model.forward_intermediates(x, indices=wanted)
        penultimate = self.model.forward_head(final, pre_logits=True)
        by_level = dict(zip(wanted, inter, strict=True))
        return [penultimate if lv is None else by_level[lv] for lv in self._levels], penultimate

    def fuse_(self) -> TimmBackbone:
        """EfficientNet-Lite (:class:`~petsml.models.efficientnet_lite.LiteNet`) folds its
        BatchNorms; timm's own networks run as they are."""
        self.eval()
        fuse = getattr(self.model, "fuse_", None)
        if callable(fuse):
            fuse()
            self.is_fused = True
        return self

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
        return pool(inter[-1])

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        level = self._early_level
        if level is None:
            pen = self.forward_features(x)
            return pen, pen
        final, inter = self.model.forward_intermediates(x, indices=[level])
        return self.model.forward_head(final, pre_logits=True), pool(inter[-1])


# --------------------------------------------------------------------------------------------
# Weights, names and the family row


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


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


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
            reason = unreachable(host)
            if reason:
                raise unavailable(name, reason, where)
            log.info("downloading %s weights", model_name)

    def build(**extra: Any) -> nn.Module:
        try:
            with socket_timeout():
                return timm.create_model(model_name, pretrained=pretrained, **kwargs, **extra)
        except (OSError, HTTPException) as error:
            raise unavailable(
                name, f"{type(error).__name__}: {error}", "the Hugging Face hub cache"
            ) from error

    if image_size is not None:
        try:  # fixed-size models (ViT & co.) take img_size; CNNs do not know the argument
            return build(img_size=image_size)
        except TypeError:
            pass
    return build()


def build_timm(request: BackboneRequest) -> TimmBackbone:
    """A timm model with its pretrained config's preprocessing (``image_size`` overrides)."""
    from timm.data import resolve_data_config

    model = _timm_model(request.name, request.model_name, request.pretrained, request.image_size)
    cfg = resolve_data_config({}, model=model)
    size = request.image_size or int(cfg["input_size"][-1])
    prep = Preprocessing(size, three_channels(cfg["mean"]), three_channels(cfg["std"]))
    return TimmBackbone(model, prep, request)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _timm_known(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


FAMILY = BackboneFamily(
    library="timm",
    label="timm",
    names=_timm_names,
    build=build_timm,
    prefixes=("timm",),
    knows=_timm_known,
)
