"""The principal subspace of the training radiographs' latents, for the "manifold" counterfactual method.

Every training image (the NIH training split and the unlabelled Hannover training images) is encoded; the top
right singular vectors of the centred latent matrix are the directions in which real radiographs vary most. The
method projects each latent step onto their span, so a counterfactual moves the image the way real images differ,
not along the small model-specific directions a plain gradient finds. Written in half precision beside the other
weights and entered in ``model_card.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ChestXrayCounterfactualLib.modelset import load_model_set, sha256_of

from .auditors import with_section
from .data import ModelSpaceDataset, Record
from .publish import files_section

FILE_NAME = "latent_basis.pt"


@torch.no_grad()
def principal_basis(records: list[Record], weights: Path, dimensions: int) -> tuple[torch.Tensor, float]:
    """(dimensions, latent size) orthonormal rows spanning the training latents' principal subspace, and the
    share of the latents' variance it holds.
    """
    autoencoder = load_model_set(weights).autoencoder
    latents = torch.cat([
        autoencoder.encode(x).flatten(1)
        for x, _ in torch.utils.data.DataLoader(ModelSpaceDataset(records), batch_size=64)
    ])
    centred = latents - latents.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    return vh[:dimensions].contiguous(), float(variance[:dimensions].sum() / variance.sum())


def publish_latent_basis(records: list[Record], weights: Path, dimensions: int) -> dict:
    """Write ``latent_basis.pt`` into ``weights`` and enter it (file, sha256, dimensions, variance held) in the card."""
    basis, explained = principal_basis(records, weights, dimensions)
    target = weights / FILE_NAME
    torch.save({"basis": basis.half()}, target)
    card_path = weights / "model_card.json"
    card = json.loads(card_path.read_text())
    card["files"]["latent_basis"] = {"file": FILE_NAME, "sha256": sha256_of(target), "bytes": target.stat().st_size}
    card["latent_basis"] = {
        "method": "top right singular vectors of the centred autoencoder latents of the training images (NIH training "
        "split and the unlabelled Hannover training images)",
        "images": len(records),
        "dimensions": dimensions,
        "variance_explained": round(explained, 4),
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    markdown = weights / "MODEL_CARD.md"
    text = with_section(markdown.read_text(), basis_section(card), before="## Training data")
    markdown.write_text(with_section(text, files_section(card), before="## Attribution"))
    return card["latent_basis"]


def basis_section(card: dict) -> str:
    """The model card's section on the latent basis."""
    basis = card["latent_basis"]
    return f"""## Latent basis of the "manifold" method (`{FILE_NAME}`)
The "manifold" counterfactual method steps only within the span of {basis["dimensions"]} directions of the latent
space: the {basis["method"]}, {basis["images"]} images. They hold {basis["variance_explained"]:.1%} of the
latents' variance. A plain latent gradient lets through small edits that only the explained classifier reacts to;
steps along the directions in which real radiographs vary make changes that the independent auditors see too
(`Testing/benchmarks/README.md`).

"""
