"""inference.py's helpers: prompts encoded and left-padded, and a prompt too long for the model's context."""

import pytest
from conftest import kit_config

import inference
from kit.errors import KitError


def test_encode_prompt_and_left_pad(tiny_tokenizer):
    text = inference.encode_prompt(tiny_tokenizer, "1 + 1 =")
    chat = inference.encode_prompt(tiny_tokenizer, [{"role": "user", "content": "1 + 1 ="}])
    assert text == tiny_tokenizer("1 + 1 =")["input_ids"]
    assert tiny_tokenizer.decode(chat).endswith("<|im_start|>assistant\n")
    ids, mask = inference.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_prompt_longer_than_the_context_is_an_error():
    cfg = kit_config("inference.max_response_length=10")
    cfg.model_context = 20
    inference.check_prompt_length([[1] * 10], cfg)
    with pytest.raises(KitError, match="exceeds the model's context of 20 tokens"):
        inference.check_prompt_length([[1] * 11], cfg)
