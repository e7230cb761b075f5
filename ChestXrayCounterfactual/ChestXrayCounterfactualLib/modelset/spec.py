"""Bring your own models: a model set described by a small JSON spec.

    {
      "name": "xrv-densenet-all",
      "resolution": 224,                      # model space is resolution x resolution
      "channels": 1,                          # 1, or 3 (the grey image is repeated)
      "normalisation": "xrv",                 # "unit" [0, 1], "xrv" [-1024, 1024], "imagenet" mean/std
      "classifier": {"kind": "torchxrayvision", "weights": "densenet121-res224-all"},
      "autoencoder": {"kind": "bundled"},
      "findings": ["Cardiomegaly", "Effusion"],   # optional for torchxrayvision: its pathology names
      "thresholds": "logit-0.5",              # or {"Cardiomegaly": 0.42, ...}
      "gradcam_layer": "features.denseblock4" # dotted path in the classifier; null: no Grad-CAM
    }

Kinds: ``bundled`` (the shipped networks), ``torchscript`` (``"path"``: a ``torch.jit`` file; an
autoencoder must export ``encode`` and ``decode``), ``torchxrayvision`` (``"weights"``: a
torchxrayvision weights name, taken from its local cache only, or ``"path"`` to the file; or
``"architecture"``: ``"densenet"`` without weights, for tests). A classifier's ``"output"`` is
``"logits"`` (default) or ``"probabilities"``. Paths are relative to the spec file. Nothing is ever
downloaded. Every file's sha256 is recorded with each explanation.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ExplainerError, SpecError
from .bundled import default_weights_dir, load_bundled, sha256_of
from .interface import AutoencoderNetwork, ClassifierNetwork, ModelSet

NORMALISATIONS = ("unit", "xrv", "imagenet")
KINDS = ("bundled", "torchscript", "torchxrayvision")
IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _to_network(x: torch.Tensor, normalisation: str, channels: int) -> torch.Tensor:
    """Model space [0, 1] -> the network's input range and channels."""
    if channels == 3:
        x = x.repeat(1, 3, 1, 1)
    if normalisation == "xrv":
        return (2 * x - 1) * 1024
    if normalisation == "imagenet":
        mean, std = (
            torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)[:, : x.shape[1]] for v in IMAGENET
        )
        return (x - mean) / std
    return x


def _from_network(y: torch.Tensor, normalisation: str) -> torch.Tensor:
    """An autoencoder's output back to model space [0, 1] (first channel)."""
    y = y[:, :1]
    if normalisation == "xrv":
        y = (y / 1024 + 1) / 2
    elif normalisation == "imagenet":
        y = y * IMAGENET[1][0] + IMAGENET[0][0]
    return y.clamp(0, 1)


class ExternalClassifier(nn.Module):
    """Any classifier seen through the engine's interface: model-space input, logits per finding."""

    def __init__(
        self,
        net: nn.Module,
        findings: list[str],
        outputs: list[int],
        normalisation: str,
        channels: int,
        output: str,
        gradcam_layer: str | None,
    ) -> None:
        super().__init__()
        self.net, self.findings, self.normalisation, self.channels, self.output = (
            net,
            findings,
            normalisation,
            channels,
            output,
        )
        self.register_buffer("outputs", torch.tensor(outputs), persistent=False)
        self.gradcam_layer_name = gradcam_layer

    @property
    def gradcam_layer(self) -> nn.Module:
        if not self.gradcam_layer_name:
            raise ExplainerError(
                "this model set names no Grad-CAM layer (spec field gradcam_layer); choose another saliency method",
            )
        layer = self.net
        for part in self.gradcam_layer_name.split("."):
            layer = getattr(layer, part)
        if isinstance(layer, torch.jit.ScriptModule):
            raise ExplainerError(
                "Grad-CAM needs hooks, which TorchScript layers do not support; choose another saliency method",
            )
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(_to_network(x, self.normalisation, self.channels)).index_select(1, self.outputs)
        if self.output == "probabilities":
            out = torch.logit(out.clamp(1e-6, 1 - 1e-6))
        return out


class _EncoderDecoder(Protocol):
    """What an external autoencoder network offers: ``encode`` and ``decode`` (torchxrayvision's also takes
    ``image_size``).
    """

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor: ...


class ExternalAutoencoder(nn.Module):
    """Any autoencoder with ``encode``/``decode`` seen through the engine's [0, 1] model space."""

    def __init__(
        self, net: _EncoderDecoder, normalisation: str, channels: int, resolution: int, xrv: bool = False,
    ) -> None:
        super().__init__()
        self.net, self.normalisation, self.channels, self.resolution, self.xrv = (
            net,
            normalisation,
            channels,
            resolution,
            xrv,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(_to_network(x, self.normalisation, self.channels))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        size = [z.shape[0], self.channels, self.resolution, self.resolution]
        decoded = self.net.decode(z, image_size=size) if self.xrv else self.net.decode(z)
        return _from_network(decoded, self.normalisation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _require(spec: dict, key: str, kinds: type | tuple, where: str = "spec"):
    if key not in spec:
        raise SpecError(f"{where} has no {key!r}")
    if not isinstance(spec[key], kinds):
        raise SpecError(f"{where} field {key!r} must be {getattr(kinds, '__name__', kinds)}, not {spec[key]!r}")
    return spec[key]


def _file(base: Path, entry: dict, role: str) -> Path:
    path = Path(_require(entry, "path", str, role))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise SpecError(f"{role} file {path} does not exist")
    return path


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript; it still loads
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as error:
            raise SpecError(f"{path} is not a TorchScript file ({' '.join(str(error).split())[:120]})") from None


def _xrv():
    try:
        import torchxrayvision
    except ImportError:
        raise SpecError("the spec uses torchxrayvision, which is not installed (pip install torchxrayvision)") from None
    return torchxrayvision


def _xrv_weights_file(xrv, urls: dict, name: str, role: str) -> Path:
    if name not in urls:
        raise SpecError(f"{role}: unknown torchxrayvision weights {name!r}")
    path = Path(xrv.utils.get_cache_dir()).expanduser() / Path(urls[name]["weights_url"]).name
    if not path.is_file():
        raise SpecError(
            f"{role}: torchxrayvision weights {name!r} are not in its local cache; nothing is downloaded. "
            f"Put the file {Path(urls[name]['weights_url']).name} at {path} or give its 'path'",
        )
    return path


def _classifier(
    entry: dict, spec: dict, base: Path, bundled: ModelSet | None, files: dict,
) -> tuple[ClassifierNetwork, list]:
    kind = entry["kind"]
    if kind == "bundled":
        assert bundled is not None  # load_spec loads the bundled set whenever a role is "bundled"
        return bundled.classifier, bundled.findings
    if kind == "torchscript":
        path = _file(base, entry, "classifier")
        files["classifier"] = sha256_of(path)
        net = _load_torchscript(path)
        names = _require(spec, "findings", list)
        return ExternalClassifier(
            net,
            names,
            list(range(len(names))),
            spec["normalisation"],
            spec["channels"],
            entry.get("output", "logits"),
            spec.get("gradcam_layer"),
        ), names
    xrv = _xrv()
    if entry.get("architecture") == "densenet":
        net = xrv.models.DenseNet(weights=None)
        labels = list(xrv.datasets.default_pathologies)
    elif "path" in entry or "weights" in entry:
        path = (
            _file(base, entry, "classifier")
            if "path" in entry
            else _xrv_weights_file(xrv, xrv.models.model_urls, entry["weights"], "classifier")
        )
        files["classifier"] = sha256_of(path)
        net = (
            xrv.models.DenseNet(weights=entry.get("weights"), cache_dir=str(path.parent))
            if "weights" in entry
            else torch.load(path, map_location="cpu", weights_only=False)
        )
        labels = list(net.pathologies)
    else:
        raise SpecError("classifier of kind torchxrayvision needs 'weights', 'path' or 'architecture'")
    names = spec.get("findings") or [n for n in labels if n]
    missing = [n for n in names if n not in labels]
    if missing:
        raise SpecError(f"findings {missing} are not among the torchxrayvision outputs {labels}")
    output = "probabilities" if getattr(net, "apply_sigmoid", False) else entry.get("output", "logits")
    return ExternalClassifier(
        net,
        names,
        [labels.index(n) for n in names],
        spec["normalisation"],
        spec["channels"],
        output,
        spec.get("gradcam_layer", "features.denseblock4"),
    ), names


def _autoencoder(entry: dict, spec: dict, base: Path, bundled: ModelSet | None, files: dict) -> AutoencoderNetwork:
    kind = entry["kind"]
    if kind == "bundled":
        assert bundled is not None  # load_spec loads the bundled set whenever a role is "bundled"
        return bundled.autoencoder
    if kind == "torchscript":
        path = _file(base, entry, "autoencoder")
        files["autoencoder"] = sha256_of(path)
        net = _load_torchscript(path)
        if not (hasattr(net, "encode") and hasattr(net, "decode")):
            raise SpecError(f"autoencoder {path} must export encode() and decode() (torch.jit.export)")
        return ExternalAutoencoder(net, spec["normalisation"], spec["channels"], spec["resolution"])
    xrv = _xrv()
    name = _require(entry, "weights", str, "autoencoder")
    path = _xrv_weights_file(xrv, xrv.autoencoders.model_urls, name, "autoencoder")
    files["autoencoder"] = sha256_of(path)
    return ExternalAutoencoder(
        xrv.autoencoders.ResNetAE(weights=name, cache_dir=str(path.parent)),
        spec["normalisation"],
        spec["channels"],
        spec["resolution"],
        xrv=True,
    )


def load_spec(path: str | Path) -> ModelSet:
    """A model set from a spec file."""
    path = Path(path)
    spec = _read_spec(path)
    entries = {role: _require(spec, role, dict) for role in ("classifier", "autoencoder")}
    for role, entry in entries.items():
        if entry.get("kind") not in KINDS:
            raise SpecError(f"{role} field 'kind' must be one of {', '.join(KINDS)}, not {entry.get('kind')!r}")
    bundled = load_bundled(default_weights_dir()) if "bundled" in {e["kind"] for e in entries.values()} else None
    files = {"spec": sha256_of(path)}
    classifier, findings = _classifier(entries["classifier"], spec, path.parent, bundled, files)
    autoencoder = _autoencoder(entries["autoencoder"], spec, path.parent, bundled, files)
    thresholds = _thresholds(spec.get("thresholds", "logit-0.5"), findings)
    for module in (classifier, autoencoder):
        module.eval().requires_grad_(False)
    if bundled is not None:
        files.update({f"bundled {k}": v for k, v in bundled.file_hashes.items()})
    both_bundled = entries["classifier"]["kind"] == entries["autoencoder"]["kind"] == "bundled"
    directions = bundled.directions if both_bundled and bundled is not None else {}
    return ModelSet(classifier, autoencoder, thresholds, directions, spec["resolution"], spec["name"], files)


def _read_spec(path: Path) -> dict:
    """The spec file's JSON object, its top-level fields checked and ``channels`` and ``normalisation`` defaulted."""
    if not path.is_file():
        raise SpecError(f"model-set spec {path} does not exist")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"model-set spec {path} is not valid JSON ({error})") from None
    if not isinstance(spec, dict):
        raise SpecError(f"model-set spec {path} must be a JSON object")
    _require(spec, "name", str)
    resolution = _require(spec, "resolution", int)
    if not 64 <= resolution <= 1024:
        raise SpecError(f"spec field 'resolution' must be between 64 and 1024, not {resolution}")
    if spec.setdefault("channels", 1) not in (1, 3):
        raise SpecError(f"spec field 'channels' must be 1 or 3, not {spec['channels']!r}")
    if spec.setdefault("normalisation", "unit") not in NORMALISATIONS:
        raise SpecError(
            f"spec field 'normalisation' must be one of {', '.join(NORMALISATIONS)}, not {spec['normalisation']!r}",
        )
    return spec


def _thresholds(thresholds: object, findings: list[str]) -> dict[str, float]:
    """The decision threshold of every finding from the spec's ``thresholds``: "logit-0.5" or one per finding."""
    if thresholds == "logit-0.5":
        thresholds = dict.fromkeys(findings, 0.5)
    elif not isinstance(thresholds, dict) or set(thresholds) != set(findings):
        raise SpecError("spec field 'thresholds' must be \"logit-0.5\" or give a probability for every finding")
    if not all(isinstance(t, (int, float)) and 0 < t < 1 and math.isfinite(t) for t in thresholds.values()):
        raise SpecError("spec thresholds must be probabilities between 0 and 1")
    return {f: float(thresholds[f]) for f in findings}


def export_torchscript(models: ModelSet, out: str | Path) -> Path:
    """The model set as TorchScript files plus a spec that loads them; returns the spec's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 1, models.size, models.size, device=models.device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        z = models.autoencoder.encode(x)
        torch.jit.trace(models.classifier, x).save(str(out / "classifier.torchscript.pt"))
        torch.jit.trace_module(models.autoencoder, {"encode": x, "decode": z}).save(
            str(out / "autoencoder.torchscript.pt"),
        )
    spec = {
        "name": f"{models.name}-torchscript",
        "resolution": models.size,
        "channels": 1,
        "normalisation": "unit",
        "classifier": {"kind": "torchscript", "path": "classifier.torchscript.pt"},
        "autoencoder": {"kind": "torchscript", "path": "autoencoder.torchscript.pt"},
        "findings": list(models.findings),
        "thresholds": dict(models.thresholds),
        "gradcam_layer": None,
    }
    path = out / "model_set.json"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path
