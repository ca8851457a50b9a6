import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

from kit import cpu_platform  # noqa: E402, F401  (selects verl's CPU platform before verl loads)


@pytest.fixture(scope="session")
def tiny_model_dir():
    from kit.models import resolve_model_path

    return resolve_model_path("embedded:tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def kit_config(*overrides):
    from kit.config import load_config

    return load_config(str(ROOT / "config.yaml"), list(overrides))
