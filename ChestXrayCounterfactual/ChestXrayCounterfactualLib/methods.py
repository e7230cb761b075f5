"""The explanation methods by name, with their defaults and one line of help each: the only place the
names are written. Imports nothing (no torch), so the command line, the Slicer module and the batch
script can offer the choices before any model is loaded.

The implementations are registered under the same names: ``counterfactual.COUNTERFACTUALS`` and
``saliency.SALIENCIES`` (a test checks both registries against these names). Adding a method: one entry
here, one function there, and its test.
"""

COUNTERFACTUAL_METHODS = {
    "local": "saliency-guided local counterfactual: the change stays in the classifier's most salient region",
    "manifold": "local counterfactual on the data manifold: latent steps within the principal subspace of the "
    "training radiographs' latents, the change kept in the classifier's most salient region",
    "latent-shift": "Latent Shift (Gifsplanation): move the latent along the finding's gradient to the threshold",
    "directions": "EigenFind-style latent directions stored with the model set; the first that crosses",
}
#: The method the engine uses unless told otherwise: the benchmark's winner (Testing/benchmarks/README.md).
DEFAULT_COUNTERFACTUAL = "manifold"

SALIENCY_METHODS = {
    "grad-cam": "Grad-CAM on the classifier's last convolutional stage (captum LayerGradCam)",
    "integrated-gradients": "Integrated Gradients from a black image (captum), smoothed",
    "occlusion": "occlusion with 32 px patches (captum)",
    "smoothgrad": "SmoothGrad: gradients averaged over noisy copies (captum NoiseTunnel)",
}
DEFAULT_SALIENCY = "grad-cam"

#: "remove" pushes the finding's probability below its threshold, "add" above it.
DIRECTIONS = ("remove", "add")

STRENGTHS = {
    "threshold": "just across the decision threshold (the smallest change that flips the decision)",
    "typical": "to the probability of a typical image without the finding (with it, when adding): the median of "
    "the validation images, stored with the model set",
}
#: How far a counterfactual goes unless told otherwise, on a model set that stores typical probabilities ("threshold"
#: on one that does not): see Testing/benchmarks/README.md for the figures.
DEFAULT_STRENGTH = "typical"

PRECISIONS = {
    "fp32": "full precision: every network pass in float32",
    "bf16": "the counterfactual search's network passes under autocast to bfloat16 (GPU; CPU too, where it pays); "
    "every probability and verdict reported is still measured in float32",
    "fp16": "as bf16, in float16 (GPU only; on the CPU the search runs in float32, with a warning)",
}
#: float32 until reduced precision has been shown to give the same decisions on every device it is offered for
#: (Testing/benchmarks/README.md, "Reduced precision").
DEFAULT_PRECISION = "fp32"


def check(
    counterfactual: str,
    saliency: str,
    direction: str | None = None,
    strength: str | None = None,
    precision: str = DEFAULT_PRECISION,
) -> None:
    """Raise ``ValueError`` with a sentence for an unknown method, direction, strength or precision."""
    if counterfactual not in COUNTERFACTUAL_METHODS:
        raise ValueError(f"unknown method {counterfactual!r}; choose from {', '.join(COUNTERFACTUAL_METHODS)}")
    if saliency not in SALIENCY_METHODS:
        raise ValueError(f"unknown saliency method {saliency!r}; choose from {', '.join(SALIENCY_METHODS)}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose remove or add")
    if strength is not None and strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose from {', '.join(STRENGTHS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


#: Where the models run (``--device``): what a request may say, and the device unless one is named (the CPU, where
#: every result of the test suite was made). ``modelset.device`` resolves a request to a torch device.
DEVICE_HELP = "auto (CUDA if torch sees a card, else Apple mps, else the CPU), cpu, cuda, cuda:N or mps"
DEFAULT_DEVICE = "cpu"


def check_device(request: str) -> str:
    """``request`` in lower case if it names a device (:data:`DEVICE_HELP`), else ``ValueError`` with a sentence."""
    name = str(request).strip().lower()
    kind, colon, index = name.partition(":")
    if name not in ("auto", "cpu", "mps", "cuda") and not (kind == "cuda" and colon and index.isdigit()):
        raise ValueError(f"device must be {DEVICE_HELP}, not {request!r}")
    return name


def help_text(methods: dict[str, str]) -> str:
    """The choices for a command line's help: "name: what it does; ..."."""
    return "; ".join(f"{name}: {text}" for name, text in methods.items())
