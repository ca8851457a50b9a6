"""The parts of verl 0.9.1 the kit replaces or patches, one module per patch, each named for what it replaces and
each checked against verl's own behaviour by a contract test (tests/test_verl_contract.py):

- cpu_platform: verl's missing CPU platform (gloo, no pinned memory), registered through verl's plugin hook;
- token_log_probs: verl's token log-probs from logits without flash-attn (a Python loop over tokens);
- causal_padding: the attention mask and logits gather of verl's padded micro-batches;
- padding: verl's no_padding_2_padding (a Python loop over rows);
- micro_batches: verl's arrangement of micro-batches, which pads long and short rows together;
- single_rank: gradient clipping and AdamW over DTensors when one rank holds the whole model;
- optimizer_offload: where verl's engine keeps an offloaded AdamW state during an update;
- on_policy: verl's separate old-log-prob pass, skipped when the old policy is the current one;
- value_model: verl's value-model loader, which insists on flash_attention_2.

kit/worker.py installs them in each worker process. This file imports nothing: algorithm.py imports cpu_platform
first, before verl loads.
"""
