"""A replica's model_path may be a Hugging Face Hub id (the cluster configs use real
models): the ingress then reads the model's config through transformers, not a file."""

from pathlib import Path

import transformers

from orchestrator.models import hf_config
from replicas.config import ReplicaConfig


class _FakeConfig:
    def __init__(self, values, text=None):
        self._values, self.text_config = values, text

    def to_dict(self):
        return dict(self._values)


def test_a_hub_id_is_read_through_transformers(monkeypatch):
    asked = []

    def from_pretrained(name):
        asked.append(name)
        return _FakeConfig({"vocab_size": 152064, "max_position_embeddings": 32768})

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    path = ReplicaConfig(name="r", gpu_class="L4",
                         model_path="Qwen/Qwen2.5-7B-Instruct").resolved_model_path()
    assert hf_config(path)["max_position_embeddings"] == 32768
    assert asked == ["Qwen/Qwen2.5-7B-Instruct"]


def test_a_multimodal_config_keeps_the_text_models_limits(monkeypatch):
    fake = _FakeConfig({"model_type": "mm"}, text=_FakeConfig({"max_position_embeddings": 8192}))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda name: fake)
    assert hf_config(Path("org/mm-model"))["max_position_embeddings"] == 8192


def test_a_local_directory_is_read_from_its_config_json(tmp_path, monkeypatch):
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", None)  # must not be used
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 2048}')
    assert hf_config(tmp_path) == {"max_position_embeddings": 2048}
