"""verl's `load_valuehead_model` (verl/utils/model.py), which the critic's TrainingWorker calls to build the value
model, asks for flash_attention_2, which needs the flash-attn package (absent on CPU and on GPU machines without
it). This one loads the same model, a token-classification head with one label on the critic's base model, with
the attention the config names (sdpa by default)."""

from transformers import AutoModelForTokenClassification
from verl.utils import model as verl_model


def load_value_model(local_path, torch_dtype, model_config, trust_remote_code):
    return AutoModelForTokenClassification.from_pretrained(
        local_path, torch_dtype=torch_dtype, config=model_config, trust_remote_code=trust_remote_code,
        attn_implementation=model_config._attn_implementation or "sdpa",
    )


def install():
    verl_model.load_valuehead_model = load_value_model
