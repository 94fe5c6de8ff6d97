"""`SteeringVector`: per-layer directions plus the metadata needed to reuse them safely.

Directions are stored raw (not normalised) in fp32; their norms are recorded. Files are
safetensors with the metadata as JSON strings; `to_gguf` writes the llama.cpp/repeng control
vector format (see `to_gguf` for the layer numbering).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from ..errors import SteerhealError
from ..runs import atomic_path

_META_KEYS = ("model_spec", "model_revision", "d_model", "n_layers", "hook", "operation",
              "read_position", "method", "pos", "neg", "n_contexts", "coeff", "calibrated_kl",
              "extra")


@dataclass
class SteeringVector:
    directions: dict[int, torch.Tensor]
    model_spec: str = ""
    model_revision: str = ""
    d_model: int = 0
    n_layers: int = 0
    hook: str = "block_output"
    operation: str = "add"
    read_position: str = "last_prompt_token"
    method: str = "mean_diff"
    pos: str = ""
    neg: str = ""
    n_contexts: int = 0
    coeff: float | None = None  # calibrated coefficient, if any
    calibrated_kl: float | None = None  # the p95 KL target it was calibrated to
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directions = {int(k): v.detach().float().cpu().reshape(-1)
                           for k, v in sorted(self.directions.items())}
        if not self.directions:
            raise SteerhealError("a steering vector needs at least one layer",
                                 "extract on at least one layer")
        dims = {v.numel() for v in self.directions.values()}
        if len(dims) != 1:
            raise SteerhealError(f"directions have different sizes {sorted(dims)}",
                                 "build every layer's direction on the same model")
        if not self.d_model:
            self.d_model = dims.pop()

    # ----- views -----------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    @property
    def norms(self) -> dict[int, float]:
        return {k: float(v.norm()) for k, v in self.directions.items()}

    def metadata(self) -> dict:
        return {k: getattr(self, k) for k in _META_KEYS}

    # ----- arithmetic (additive vectors only) ---------------------------------------------
    def _require_additive(self, other: SteeringVector | None = None) -> None:
        for v in (self, other):
            if v is not None and v.operation != "add":
                raise SteerhealError(f"arithmetic on a {v.operation!r} vector",
                                     "only additive ('add') vectors support +, - and *")
        if other is not None and other.d_model != self.d_model:
            raise SteerhealError(f"cannot combine vectors of size {self.d_model} and {other.d_model}",
                                 "combine vectors extracted from the same model")

    def _derived(self, directions: dict[int, torch.Tensor], method: str) -> SteeringVector:
        return replace(self, directions=directions, method=method, coeff=None, calibrated_kl=None)

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        self._require_additive(other)
        zero = torch.zeros(self.d_model)
        dirs = {k: self.directions.get(k, zero) + other.directions.get(k, zero)
                for k in sorted(set(self.directions) | set(other.directions))}
        return self._derived(dirs, f"({self.method})+({other.method})")

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return self + (-other)

    def __mul__(self, scalar: float) -> SteeringVector:
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        self._require_additive()
        return self._derived({k: v * float(scalar) for k, v in self.directions.items()},
                             f"{float(scalar):g}*({self.method})")

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> SteeringVector:
        return self * (1.0 / scalar)

    def cosine(self, other: SteeringVector) -> dict[int, float]:
        """Per-layer cosine similarity over the layers both vectors have."""
        return {k: float(torch.nn.functional.cosine_similarity(
            self.directions[k], other.directions[k], dim=0))
            for k in self.directions if k in other.directions}

    # ----- compatibility ---------------------------------------------------------------
    def check_compatible(self, lm, *, allow_other_model: bool = False) -> None:
        """Fail clearly if this vector cannot be applied to `lm` (a LoadedModel)."""
        if self.d_model != lm.d_model:
            raise SteerhealError(
                f"vector has size {self.d_model} but model {lm.spec} has hidden size {lm.d_model}",
                "use a vector extracted from this model",
            )
        bad = [k for k in self.layers if not 0 <= k < lm.n_layers]
        if bad:
            raise SteerhealError(f"vector layers {bad} do not exist in {lm.spec} ({lm.n_layers} blocks)",
                                 "use a vector extracted from this model")
        if not allow_other_model and self.model_spec and (
                self.model_spec != lm.spec or self.model_revision != lm.revision):
            raise SteerhealError(
                f"vector was extracted from {self.model_spec}@{self.model_revision}, "
                f"not {lm.spec}@{lm.revision}",
                "re-extract on this model, or pass allow_other_model / --allow-other-model",
            )

    # ----- files -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        tensors = {f"layer.{k}": v.contiguous() for k, v in self.directions.items()}
        meta = {"format": "steerheal.SteeringVector/1"}
        meta.update({k: json.dumps(v) for k, v in self.metadata().items()})
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise SteerhealError(f"vector file {path} does not exist", "check the path")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                dirs = {int(k.split(".", 1)[1]): fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise SteerhealError(f"{path} is not a readable safetensors vector ({exc})",
                                 "pass a file written by `steerheal vector extract`") from exc
        if meta.get("format", "").split("/")[0] != "steerheal.SteeringVector":
            raise SteerhealError(f"{path} is not a steerheal vector file",
                                 "pass a file written by `steerheal vector extract`")
        known = {f.name for f in fields(cls)}
        kwargs = {k: json.loads(v) for k, v in meta.items() if k in known}
        return cls(directions=dirs, **kwargs)

    def to_gguf(self, path: str | Path, model_hint: str = "llama") -> Path:
        """Write a GGUF control vector readable by llama.cpp (`--control-vector`) and repeng.

        Layer numbering: tensor `direction.N` holds our layer N, the output of 0-based decoder
        block N. llama.cpp adds `direction.N` to the output of its layer `il = N` (also 0-based)
        and has no slot for N = 0, so a vector on block 0 cannot be exported.
        """
        import gguf

        if 0 in self.directions:
            raise SteerhealError("llama.cpp control vectors cannot hold layer 0",
                                 "drop layer 0 from the vector before exporting")
        with atomic_path(path) as tmp:
            writer = gguf.GGUFWriter(str(tmp), "controlvector")
            writer.add_string("controlvector.model_hint", model_hint)
            writer.add_uint32("controlvector.layer_count", len(self.directions))
            for k, v in self.directions.items():
                writer.add_tensor(f"direction.{k}", v.numpy().astype("float32"))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        return Path(path)
