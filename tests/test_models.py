"""Model folders: model_path resolved to a local Hugging Face folder, and the tiny model the tests build."""

import pytest

from kit.errors import KitError
from kit.setup.models import resolve_model_path


def test_model_path_errors(tmp_path):
    with pytest.raises(KitError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(KitError, match="without config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(KitError, match="could not be fetched from the hub"):
        resolve_model_path("no-such-org/no-such-model")


def test_tiny_model_is_a_hugging_face_folder(tiny_model_dir, tiny_tokenizer):
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir
    assert tiny_tokenizer.eos_token == "<|im_end|>" and tiny_tokenizer.chat_template
