"""What the hf sampler's decode steps read and write: the KV cache (every layer's keys and values, preallocated for a
batch shape, read a window at a time), the decode attention, and the other per-row buffers of a batch.

A decode step attends only to the cache positions filled so far, rounded up to a window of WINDOW positions: one
CUDA graph per window, so early steps of a long response read a fraction of the cache (the attention products read
the cache once per step, the largest cost of a decode step after compile).
"""

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTENTION = "kit_sampler"
WINDOW = 64  # decode attention reads the cache up to the next multiple of this past the current position


def grouped_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Attention for the sampler's model: sdpa for the prompt; for one decoding token a grouped-query product
    that reads each cached key and value once (sdpa with a mask would first copy them once per query head)."""
    if query.shape[2] > 1:
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    rows, heads, _, dim = query.shape  # (B, H, 1, D)
    kv_heads, length = key.shape[1], key.shape[2]  # key, value: (B, Hkv, T, D)
    grouped = query.view(rows, kv_heads, heads // kv_heads, dim)  # (B, Hkv, H/Hkv, D)
    scores = torch.matmul(grouped, key.transpose(-1, -2)) * (scaling or dim ** -0.5)  # (B, Hkv, H/Hkv, T)
    scores = scores + attention_mask.view(rows, 1, 1, length)  # mask: (B, 1, 1, T), 0 or a large negative
    weights = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    output = torch.matmul(weights, value).view(rows, heads, 1, dim)  # (B, H, 1, D)
    return output.transpose(1, 2), None  # (B, 1, H, D), as HF's attention functions return it


AttentionInterface.register(ATTENTION, grouped_attention)


class KVCache:
    """Keys and values of every layer, preallocated: (B, Hkv, T, D) each. A forward writes its new keys and
    values at the cache positions in `slots` (a tensor, so a captured graph replays with its current value)
    and attends to positions 0..window-1 (fixed for each captured graph). It answers the two calls HF's
    decoder layers make of a cache."""

    def __init__(self, config, rows: int, length: int, dtype, device):
        kv_heads = config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (rows, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.slots = torch.zeros(1, dtype=torch.long, device=device)
        self.window = length

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.keys[layer_idx].index_copy_(2, self.slots, key_states)
        self.values[layer_idx].index_copy_(2, self.slots, value_states)
        return self.keys[layer_idx][:, :, :self.window], self.values[layer_idx][:, :, :self.window]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # never asked: the sampler passes position ids and a full attention mask

    def first_rows(self, rows: int) -> "KVCache":
        """The same cache's first `rows` rows (views: the same memory), for a batch that has dropped its stopped rows."""
        narrowed = copy.copy(self)
        narrowed.keys = [keys[:rows] for keys in self.keys]
        narrowed.values = [values[:rows] for values in self.values]
        return narrowed


def window_of(positions: int, length: int) -> int:
    """The window a decode step attends to when cache positions 0..positions-1 must be visible."""
    return min(math.ceil(positions / WINDOW) * WINDOW, length)


def windows(length: int) -> list[int]:
    """Every window of a cache of `length` positions (what window_of can return): the multiples of WINDOW below
    it, and itself."""
    return [*range(WINDOW, length, WINDOW), length]


@dataclass
class Decoding:
    """Everything one decode step reads and writes, for one batch shape: rows B, cache length T, R new tokens."""
    cache: KVCache
    tokens: torch.Tensor  # (B, 1) the token each row feeds next
    positions: torch.Tensor  # (B, 1) its position id
    slot: torch.Tensor  # (1,) its cache position, the same for every row (prompts are left-padded)
    step: torch.Tensor  # (1,) its index among the new tokens
    visible: torch.Tensor  # (B, T) cache positions a row attends to: its prompt tokens and its tokens so far
    finished: torch.Tensor  # (B,) the row has written its eos
    responses: torch.Tensor  # (B, R) sampled tokens, pad after eos
    log_probs: torch.Tensor  # (B, R) their log-probs under the sampling temperature, 0 after eos
    entropy: torch.Tensor  # (B, R) the entropy of the distribution each was drawn from, 0 after eos (and greedy)
    temperature: torch.Tensor  # () read by the captured graph, so one graph serves every temperature
    top_p: torch.Tensor  # ()
    eos: torch.Tensor  # ()
    pad: torch.Tensor  # ()
    greedy: bool  # argmax instead of sampling
    use_top_p: bool  # top_p < 1: cut the distribution's tail before sampling
    row_ids: torch.Tensor  # (B,) the row of responses, log_probs and entropy each batch row samples for
    all_rows: int  # the rows of the first batch: the sampling noise drawn at each step is theirs
    graphs: dict = field(default_factory=dict)  # window -> the decode step captured for it (CUDA), else empty
    smaller: "Decoding | None" = None  # the same buffers' first half of the rows, for when half have stopped

    @property
    def rows(self) -> int:
        return self.tokens.shape[0]

    def first_rows(self, rows: int) -> "Decoding":
        """This state's first `rows` rows: views of its per-row buffers, its outputs and scalars shared."""
        return dataclasses.replace(
            self, cache=self.cache.first_rows(rows), tokens=self.tokens[:rows], positions=self.positions[:rows],
            visible=self.visible[:rows], finished=self.finished[:rows], row_ids=self.row_ids[:rows], graphs={},
            smaller=None)


def record(state: Decoding, outputs: torch.Tensor, values: torch.Tensor):
    """values (B,) into column state.step of outputs (B0, R), each at its row's place (row_ids)."""
    outputs.index_put_((state.row_ids, state.step.expand(state.rows)), values)


def batches(state: Decoding) -> list[Decoding]:
    """A state and its smaller batches, largest first."""
    return [state] + (batches(state.smaller) if state.smaller is not None else [])
