"""The model layer: resolve a spec string to a model + tokenizer on the right device.

Specs (DESIGN.md section 2): an embedded name (`smollm2-135m`), an in-process tiny random
model (`tiny-random-llama`, `tiny-random-gemma3`), a local HF directory, a `.gguf` file, or a
Hugging Face hub id. Device and dtype are picked at run time (CUDA > MPS > CPU; bf16 where
the hardware supports it) and can be overridden. `device="auto"` spreads a model that does not
fit one GPU over every visible GPU (transformers' `device_map="auto"`); the steering hooks, heal
loss and evaluation move their tensors to the device of the block or head they meet.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import embedded, tiny
from .errors import SteerhealError

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to load on; "auto" (a device map) resolves to the first accelerator's type."""
    if device is not None and str(device) != "auto":
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise SteerhealError(f"unknown device {device!r}", "use cpu, cuda, cuda:N, mps or auto") from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        if dtype not in _DTYPES:
            raise SteerhealError(f"unknown dtype {dtype!r}", f"use one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a PeftModel (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_stack(model: nn.Module) -> nn.Module:
    """The module that owns the decoder block list (LlamaModel, Gemma3TextModel, ...)."""
    inner = unwrap(model)
    for path in ("model", "model.language_model", "language_model.model", "transformer"):
        obj = inner
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and isinstance(getattr(obj, "layers", None), nn.ModuleList):
            return obj
    raise SteerhealError(
        f"cannot find the decoder block list of {type(inner).__name__}",
        "use a Llama, Qwen, Mistral or Gemma family model (blocks at model.layers)",
    )


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    return decoder_stack(model).layers


@dataclass
class LoadedModel:
    """A model, its tokenizer and what we know about where they came from."""

    model: nn.Module
    tokenizer: object
    spec: str
    revision: str
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (the first GPU of a device map)."""
        return unwrap(self.model).get_input_embeddings().weight.device

    def block_device(self, layer: int) -> torch.device:
        """The device of decoder block `layer` (differs from `device` under a device map)."""
        return next(self.blocks[layer].parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def blocks(self) -> nn.ModuleList:
        return decoder_blocks(self.model)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(unwrap(self.model).get_input_embeddings().weight.shape[1])

    @property
    def max_positions(self) -> int:
        cfg = unwrap(self.model).config
        cfg = getattr(cfg, "text_config", cfg)
        return int(getattr(cfg, "max_position_embeddings", 1 << 30) or 1 << 30)


def _config_hash(model: nn.Module) -> str:
    cfg = json.dumps(unwrap(model).config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(cfg.encode()).hexdigest()[:12]


def _load_hf(path_or_id: str, device, dtype, device_map=None, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path_or_id, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype, device_map=device_map, **kwargs)
    except (OSError, ValueError) as exc:
        raise SteerhealError(
            f"cannot load model {path_or_id!r} ({str(exc).splitlines()[0][:160]})",
            "give an embedded name (see `steerheal models`), a local HF directory, a .gguf file, "
            "or a hub id reachable from this machine",
        ) from exc
    embedded.clear_gguf_quantizer(model)
    offloaded = sorted({str(d) for d in (getattr(model, "hf_device_map", None) or {}).values()} & {"cpu", "disk"})
    if device_map is not None and offloaded:
        raise SteerhealError(f"model {path_or_id!r} does not fit the visible GPUs (device_map put blocks on "
                             f"{', '.join(offloaded)})", "use more or larger GPUs, or a smaller model; "
                             "offloading is not supported (weight steering writes into the weights)")
    return (model if device_map is not None else model.to(device)), tok


def load_model(spec: str, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, *, seed: int = 0) -> LoadedModel:
    """Resolve a model spec string; see the module docstring for the accepted forms."""
    if not spec or not spec.strip():
        raise SteerhealError("empty model spec", "pass e.g. --model smollm2-135m")
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    # A device map only where there is more than one place to put layers; elsewhere "auto" = best device.
    device_map = "auto" if str(device) == "auto" and dev.type == "cuda" else None
    if spec in tiny.TINY_MODELS:
        model, tok = tiny.TINY_MODELS[spec](seed)
        model = model.to(device=dev, dtype=dt)
        revision = f"seed{seed}-{_config_hash(model)}"
    elif spec in embedded.EMBEDDED:
        model, tok = _load_hf(str(embedded.ensure_converted(spec)), dev, dt, device_map)
        revision = embedded.EMBEDDED[spec].sha256[:12]
    elif spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise SteerhealError(f"GGUF file {spec} does not exist", "check the path")
        model, tok = _load_hf(str(path.parent), dev, dt, device_map, gguf_file=path.name)
        revision = _config_hash(model)
    elif Path(spec).is_dir():
        model, tok = _load_hf(spec, dev, dt, device_map)
        revision = _config_hash(model)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        model, tok = _load_hf(spec, dev, dt, device_map)
        revision = getattr(model.config, "_commit_hash", None) or _config_hash(model)
    else:
        raise SteerhealError(
            f"unknown model spec {spec!r}",
            f"use an embedded name ({', '.join(embedded.EMBEDDED)}), a tiny test model "
            f"({', '.join(tiny.TINY_MODELS)}), a local directory, a .gguf file or owner/name",
        )
    model.eval()
    if getattr(tok, "pad_token", None) is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    lm = LoadedModel(model=model, tokenizer=tok, spec=spec, revision=str(revision))
    _ = lm.blocks  # fail now, with the class name, if the block list cannot be found
    return lm


def list_specs() -> list[dict]:
    rows = [{"spec": name, "kind": "embedded", "cached": embedded.is_cached(name),
             "description": e.description} for name, e in embedded.EMBEDDED.items()]
    rows += [{"spec": name, "kind": "tiny (in-process)", "cached": True,
              "description": "seeded random weights for tests"} for name in tiny.TINY_MODELS]
    return rows


def attach_adapter(lm: LoadedModel, path: str | Path) -> LoadedModel:
    """Wrap `lm.model` with a saved PEFT adapter (loadable by `PeftModel.from_pretrained`)."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise SteerhealError(f"{path} is not a PEFT adapter directory (no adapter_config.json)",
                             "pass a directory written by save_pretrained of a PEFT model")
    check_adapter_base(lm, path)
    try:
        lm.model = PeftModel.from_pretrained(lm.model, str(path)).eval()
    except (RuntimeError, ValueError, KeyError) as err:
        raise adapter_mismatch(lm, path, err) from err
    lm.extra["adapter"] = str(path)
    return lm


def check_adapter_base(lm: LoadedModel, path: str | Path) -> None:
    """Refuse an adapter whose steerheal record (history.json beside it) names another base model."""
    import json

    path = Path(path)
    for record in (path / "history.json", path.parent / "history.json"):
        if record.is_file():
            meta = json.loads(record.read_text())
            model, revision = meta.get("model"), meta.get("revision")
            if model and model != lm.spec:
                raise SteerhealError(f"adapter {path} was trained on {model!r}, not {lm.spec!r}",
                                     f"load --model {model}, or use an adapter trained on {lm.spec}")
            if revision and lm.revision and revision != lm.revision:
                raise SteerhealError(f"adapter {path} was trained on revision {revision} of {model}, this is "
                                     f"{lm.revision}", "use an adapter trained on this revision")
            return


def adapter_mismatch(lm: LoadedModel, path: str | Path, err: Exception) -> SteerhealError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return SteerhealError(f"adapter {path} does not fit {lm.spec} ({first[:200]})",
                          "use an adapter trained on this model")


@contextmanager
def frozen_parameters(model):
    """Parameters stop requiring grad inside the block (only what the caller trains gets .grad)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
