"""Which decoder blocks a vector lives on.

Layer indices are 0-based decoder block indices; a vector at layer `i` is added to the output
of block `i` (the residual stream after that block).
"""

from __future__ import annotations

from ..errors import SteerhealError

MID_BAND = (0.45, 0.55)  # the seed's reference band for the vector, as a fraction of depth


def default_layers(n_layers: int, band: tuple[float, float] = MID_BAND) -> list[int]:
    lo = min(round(band[0] * n_layers), n_layers - 1)
    hi = min(round(band[1] * n_layers), n_layers - 1)
    return list(range(lo, max(lo, hi) + 1))


def parse_layers(spec: str | list[int] | None, n_layers: int) -> list[int]:
    """Accepts 'mid', '14,15,16', '14-16', '0.45-0.55' (fractions of depth) or a list of ints."""
    if spec is None or spec == "mid":
        return default_layers(n_layers)
    if isinstance(spec, str):
        spec = spec.strip()
        try:
            if "-" in spec and "," not in spec:
                a, b = (x.strip() for x in spec.split("-", 1))
                if "." in a or "." in b:
                    return default_layers(n_layers, (float(a), float(b)))
                layers = list(range(int(a), int(b) + 1))
            else:
                layers = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError as exc:
            raise SteerhealError(f"cannot parse layers {spec!r}",
                                 "use 'mid', '14,15,16', '14-16' or '0.45-0.55'") from exc
    else:
        layers = [int(x) for x in spec]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if not layers or bad:
        raise SteerhealError(
            f"layers {bad or layers} out of range for a model with {n_layers} blocks",
            f"choose layers in 0..{n_layers - 1}",
        )
    return sorted(set(layers))


def check_layer(n_layers: int, layer: int, what: str = "layer", model: str = "the model") -> int:
    """One block index, or a one-line error naming the valid range."""
    if not 0 <= layer < n_layers:
        raise SteerhealError(f"{what} {layer} is out of range for {model} ({n_layers} blocks: 0..{n_layers - 1})",
                             f"choose a {what} between 0 and {n_layers - 1}")
    return layer
