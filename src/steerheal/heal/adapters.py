"""The adapter history: a stack of per-round PEFT LoRA adapters with gates.

The student is base + sum_k gate_k * delta_k, one named LoRA adapter per round (`r00`,
`r01`, ...), all active at once. The base weights are never modified, so the reference pass
of the heal loss is the same model with adapters gated off (`reference("base")`) or with
only the current round's adapter off (`reference("prev")`): no second model copy.
Each adapter is saved in PEFT format (loadable by `PeftModel.from_pretrained`), with the gates
in `history.json`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SteerhealError
from ..models import LoadedModel, adapter_mismatch, check_adapter_base
from ..runs import write_json
from ..steering.layers import default_layers


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    layer_band: tuple[float, float] = (0.2, 0.8)  # fraction of depth the adapter may touch

    def peft_config(self, n_layers: int):
        from peft import LoraConfig

        layers = default_layers(n_layers, self.layer_band)
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), layers_to_transform=layers,
                          init_lora_weights=True, bias="none", task_type="CAUSAL_LM")


@dataclass
class AdapterHistory:
    lm: LoadedModel
    names: list[str] = field(default_factory=list)
    gates: dict[str, float] = field(default_factory=dict)

    @property
    def peft_model(self):
        if not self.names:
            raise SteerhealError("the adapter history is empty", "call new_round() first")
        return self.lm.model

    @property
    def current(self) -> str | None:
        return self.names[-1] if self.names else None

    def new_round(self, spec: LoraSpec) -> str:
        """Add a fresh adapter (B = 0, so the student starts equal to the last student)."""
        from peft import get_peft_model

        name = f"r{len(self.names):02d}"
        cfg = spec.peft_config(self.lm.n_layers)
        if not self.names:
            self.lm.model = get_peft_model(self.lm.model, cfg, adapter_name=name)
        else:
            self.lm.model.add_adapter(name, cfg)
        self.names.append(name)
        self.gates[name] = 1.0
        self._activate(self.names, trainable=name)
        return name

    def _layers(self):
        from peft.tuners.lora import LoraLayer

        return [m for m in self.peft_model.modules() if isinstance(m, LoraLayer)]

    def _activate(self, names: list[str], trainable: str | None = None) -> None:
        self.peft_model.base_model.set_adapter(list(names))
        for n, p in self.peft_model.named_parameters():
            p.requires_grad_(trainable is not None and f".{trainable}." in n and "lora_" in n)
        for layer in self._layers():
            for name in names:
                layer.set_scale(name, self.gates[name])

    def set_gate(self, name: str, gate: float) -> None:
        self.gates[name] = float(gate)
        for layer in self._layers():
            layer.set_scale(name, self.gates[name])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft_model.parameters() if p.requires_grad]

    def lora_factors(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """(A, B, scaling) of every LoRA layer of adapter `name`."""
        return [(layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name])
                for layer in self._layers() if name in layer.lora_A]

    @contextmanager
    def reference(self, kind: str) -> Iterator[None]:
        """Forward passes inside see the base model ("base") or the previous student ("prev")."""
        if kind == "base" or (kind == "prev" and len(self.names) <= 1):
            with self.peft_model.disable_adapter():
                yield
            return
        if kind != "prev":
            raise SteerhealError(f"unknown barrier reference {kind!r}", "use 'base' or 'prev'")
        trainable = self.current
        self._activate(self.names[:-1])
        try:
            yield
        finally:
            self._activate(self.names, trainable=trainable)

    @contextmanager
    def gated(self, gates: dict[str, float]) -> Iterator[None]:
        """Temporarily use other gates (e.g. 0 for all: base; 1 for all but the last: previous)."""
        saved = dict(self.gates)
        try:
            for name, gate in gates.items():
                self.set_gate(name, gate)
            yield
        finally:
            for name, gate in saved.items():
                self.set_gate(name, gate)

    def save(self, directory: str | Path, names: list[str] | None = None) -> Path:
        directory = Path(directory)
        for name in names or self.names:
            self.peft_model.save_pretrained(str(directory), selected_adapters=[name])
        write_json(directory / "history.json", {"names": self.names, "gates": self.gates, "model": self.lm.spec,
                                                "revision": self.lm.revision})
        return directory

    def attach(self, path: str | Path, name: str, gate: float = 1.0) -> None:
        """Append a saved PEFT adapter (a folder with adapter_config.json) to the history."""
        from peft import PeftModel

        if not (Path(path) / "adapter_config.json").is_file():
            raise SteerhealError(f"{path} is not a saved PEFT adapter", "point at a folder with adapter_config.json")
        check_adapter_base(self.lm, path)
        try:
            if not self.names:
                self.lm.model = PeftModel.from_pretrained(self.lm.model, str(path), adapter_name=name)
            else:
                self.lm.model.load_adapter(str(path), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as err:
            raise adapter_mismatch(self.lm, path, err) from err
        self.names.append(name)
        self.gates[name] = float(gate)
        self._activate(self.names)

    @classmethod
    def load(cls, lm: LoadedModel, directory: str | Path) -> AdapterHistory:
        """Re-attach every adapter saved by `save` (PEFT format, one folder each) with its gate."""
        directory = Path(directory)
        meta = json.loads((directory / "history.json").read_text())
        hist = cls(lm)
        for name in meta["names"]:
            hist.attach(directory / name, name, meta["gates"][name])  # PEFT's folder for a non-default adapter
        return hist

    def merged_copy(self) -> torch.nn.Module:
        """A plain transformers model with every gated adapter merged into the weights."""
        clone = copy.deepcopy(self.peft_model)
        return clone.merge_and_unload(adapter_names=list(self.names))

    def export_merged(self, directory: str | Path, *, in_place: bool = False) -> Path:
        """Save base + every gated adapter as one plain HF model directory (+ tokenizer), atomically.

        `in_place` merges into the loaded model instead of a deep copy (no second copy of the
        weights, which matters on a GPU) and ends the history: its adapters are gone afterwards.
        """
        from ..runs import atomic_dir

        if in_place:
            model = self.peft_model.merge_and_unload(adapter_names=list(self.names))
            self.lm.model, self.names, self.gates = model, [], {}
        else:
            model = self.merged_copy()
        with atomic_dir(directory) as tmp:
            model.save_pretrained(str(tmp))
            self.lm.tokenizer.save_pretrained(str(tmp))
        return Path(directory)
