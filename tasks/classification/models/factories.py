"""Models from outside the repository: any torchvision or timm classifier by name, or any
`pkg.module:callable` that returns an nn.Module.

Weights stay random unless the user names a local file or a torchvision weights enum whose file
is already in the torch hub cache: nothing here ever downloads. Loaded weights that do not fit
(a 1000-class head for a 10-class dataset, a 3-channel stem for grey images) are skipped by shape
and named in the log.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import CheckpointError, ConfigError, load_problem

__all__ = [
    "adapt_in_chans",
    "import_factory",
    "load_weights",
    "python_model",
    "timm_model",
    "torchvision_model",
]

log = logging.getLogger(__name__)


def _unknown_arch(source: str, arch: object, known: list[str], lister: str) -> ConfigError:
    if not arch:
        return ConfigError(f"model={source} needs model.arch=<name>, e.g. model.arch={known[0]}")
    close = difflib.get_close_matches(str(arch), known, n=3, cutoff=0.5)
    hint = f"; nearest: {', '.join(close)}" if close else ""
    return ConfigError(f"unknown {source} model.arch={arch!r}{hint} ({len(known)} known: {lister})")


def _state_dict_of(blob: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(blob, Mapping) and isinstance(blob.get(key), Mapping):
            blob = blob[key]
    if not isinstance(blob, Mapping) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"weights file {path} holds no state dict of tensors")
    return dict(blob)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local state dict, skipping (and logging) entries whose name or shape do not fit."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.weights={str(path)!r} is not a file; give a local weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            blob: Any = load_file(str(path))
        else:
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read weights file {path}: {load_problem(e)}; it must be a state dict saved "
            "by torch.save or a .safetensors file"
        ) from e
    state = _state_dict_of(blob, path)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise CheckpointError(f"no tensor of weights file {path} fits {type(model).__name__}")
    bad = [k for k, v in fits.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"weights file {path} holds non-finite values (NaN/inf) in {len(bad)} tensor(s), "
            f"e.g. {', '.join(bad[:3])}; training from them cannot work: use an intact file"
        )
    skipped = sorted(set(own) - set(fits))
    model.load_state_dict(fits, strict=False)
    log.info("loaded %d tensors from %s; kept random: %s", len(fits), path, skipped or "none")
    return model


def _cached_torchvision_weights(arch: str, name: str) -> Path:
    """The hub-cache file of a torchvision weights enum ("DEFAULT", "IMAGENET1K_V1" or
    "ResNet18_Weights.IMAGENET1K_V1"); an error when it is not cached (we never download)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
        weights = enum[name.split(".")[-1]] if name.split(".")[-1] != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError) as e:
        choices = ", ".join(
            ["DEFAULT", *(w.name for w in torchvision.models.get_model_weights(arch))]
        )
        raise ConfigError(
            f"model.weights={name!r} is not a weights enum of {arch}; known: {choices}, "
            "or a local file path"
        ) from e
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not file.is_file():
        raise ConfigError(
            f"model.weights={name!r}: {file} is not cached and PruneBench never downloads; "
            "fetch it once yourself or give a local file path"
        )
    return file


def adapt_in_chans(model: nn.Module, in_chans: int) -> nn.Module:
    """Give the first conv `in_chans` inputs (grey digits into a 3-channel stem); pretrained
    filters are summed over the old inputs and spread over the new ones."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_chans:
                    return model
                if child.groups != 1:
                    raise ConfigError(
                        f"cannot give {type(model).__name__} {in_chans} input channels: its first "
                        "conv is grouped; use data with 3 channels"
                    )
                new = nn.Conv2d(
                    in_chans,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    bias=child.bias is not None,
                    padding_mode=child.padding_mode,
                )
                with torch.no_grad():
                    w = child.weight.sum(1, keepdim=True) / in_chans
                    new.weight.copy_(w.expand_as(new.weight))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, child_name, new)
                return model
    return model


def _check_forward(model: nn.Module, label: str, in_chans: int, input_size: int) -> nn.Module:
    """One eval forward at the data's size, so a model that cannot take it fails here, in one
    line, rather than deep inside the structure trace."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.randn(1, in_chans, input_size, input_size))
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"{label} cannot run on {in_chans}×{input_size}×{input_size} inputs "
            f"({type(e).__name__}: {msg}); use data with a larger shape or other model kwargs"
        ) from e
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"{label} returns {type(out).__name__}, not a tensor of logits; "
            "pass model kwargs that turn off auxiliary outputs"
        )
    return model


def torchvision_model(
    arch: str | None = None,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    in_chans: int = 3,
    num_classes: int = 1000,
    input_size: int = 224,
) -> nn.Module:
    """Any torchvision classification model by name (`torchvision.models.list_models`)."""
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise _unknown_arch(
            "torchvision", arch, known, "torchvision.models.list_models(module=torchvision.models)"
        )
    kw = dict(kwargs or {})
    builder = torchvision.models.get_model_builder(arch)
    if arch in ("inception_v3", "googlenet"):
        kw.setdefault("aux_logits", False)  # one logits tensor in training too, like every model
        kw.setdefault("init_weights", True)
    if arch.startswith("vit_"):
        kw.setdefault("image_size", input_size)  # position embeddings sized for the data
    try:
        model = builder(weights=None, num_classes=num_classes, **kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"torchvision model {arch} rejects model.kwargs {kw}: {e}") from e
    except AssertionError as e:  # ViT: the image size is not a multiple of the patch size
        raise ConfigError(
            f"torchvision {arch} cannot run on {in_chans}×{input_size}×{input_size} inputs "
            f"({e}); use data with another size or other model kwargs"
        ) from e
    if weights:
        path = Path(weights).expanduser()
        load_weights(model, path if path.suffix else _cached_torchvision_weights(arch, weights))
    return _check_forward(
        adapt_in_chans(model, in_chans), f"torchvision {arch}", in_chans, input_size
    )


def timm_model(
    arch: str | None = None,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    in_chans: int = 3,
    num_classes: int = 1000,
    input_size: int = 224,
) -> nn.Module:
    """Any timm model by name; weights only from a local file (`model.weights=/path`)."""
    try:
        import timm
    except ImportError as e:
        raise ConfigError(
            "model=timm needs the timm package; pip install 'prunebench[timm]'"
        ) from e
    known = timm.list_models()
    if arch not in known:
        raise _unknown_arch("timm", arch, known, "timm.list_models()")
    kw = dict(kwargs or {})
    try:
        model = timm.create_model(
            arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"timm model {arch} rejects model.kwargs {kw}: {e}") from e
    if weights:
        load_weights(model, weights)
    return _check_forward(model, f"timm {arch}", in_chans, input_size)


def import_factory(path: object) -> Callable[..., Any]:
    """`pkg.module:callable` (or `pkg.module.callable`) → the callable, or a one-line error."""
    text = str(path or "")
    module_name, sep, attr = text.partition(":")
    if not sep:
        module_name, _, attr = text.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(
            f"model.factory={path!r} is not 'package.module:callable'; e.g. "
            "model.factory=mypkg.nets:build_net"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"model.factory={text!r}: cannot import module '{module_name}' ({e}); "
            "install the package or add its directory to PYTHONPATH"
        ) from e
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"model.factory={text!r}: module '{module_name}' has no attribute '{attr}'"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"model.factory={text!r} is a {type(target).__name__}, not callable")
    return target


def python_model(
    factory: str | None = None,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    in_chans: int = 3,
    num_classes: int = 1000,
    input_size: int = 224,
) -> nn.Module:
    """`factory(**kwargs)`, plus `in_chans`, `num_classes` and `input_size` where its signature
    names them and the config does not set them (a `**kwargs` catch-all gets none of them)."""
    fn = import_factory(factory)
    kw = dict(kwargs or {})
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    data = {"in_chans": in_chans, "num_classes": num_classes, "input_size": input_size}
    for k, v in data.items():
        if k not in kw and k in params:
            kw[k] = v
    try:
        model = fn(**kw)
    except TypeError as e:
        raise ConfigError(f"model.factory={factory!r} rejects its arguments {kw}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.factory={factory!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    if weights:
        load_weights(model, weights)
    return _check_forward(model, f"model.factory={factory}", in_chans, input_size)
