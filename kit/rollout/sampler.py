"""The hf engine's sampler: a plain (unsharded) copy of the actor that decodes with a static KV cache and, on a
GPU, replays each decode step as one CUDA graph.

Hugging Face `generate` spends most of a small model's decode step in Python: 138 ms a step for 512 rows of
SmolLM2-135M on an H100, where the GPU work takes a few ms. Here every buffer a decode step touches (the
KV cache, the token, position and mask rows, the outputs) is allocated once per batch shape, so the whole
step (model forward, sampling, eos bookkeeping) can be captured once and replayed with a single launch.
All n responses of a prompt are rows of the same batch; each row stops at its own eos (later tokens are
pad), and the loop ends when every row has.

Rows that have stopped are dropped: once at most half of a batch's rows still run, they move (their KV cache up to
the current position, their token, position and mask) into the first rows of the same buffers, and decoding goes on
with a batch half as large (and its own graphs), down to MIN_ROWS. At long, long-tailed lengths most of a decode
step reads the KV cache, and most rows stop long before the longest: a response of mean length a quarter of the
maximum costs the full batch's cache reads only near its start. Each row draws its sampling noise from the full
batch's draw at every step, so a row's tokens do not depend on which other rows still run.

A decode step attends only to the cache positions filled so far, rounded up to a window (kit/rollout/decoding.py).

The copy's weights are refreshed from the FSDP actor after each update (`load_weights`), in place, so the
captured graphs stay valid: the sampler always samples the current policy.

With `compiled`, the decode step goes through torch.compile first: its many small elementwise kernels
(norms, rotary, activations, sampling) fuse into a few, which the graphs then replay. A compiled step keeps every
row (each batch size would compile again).
"""

import copy
import math

import torch
from transformers import AutoModelForCausalLM

from kit import lora
from kit.errors import KitError
from kit.rollout.decoding import ATTENTION, Decoding, KVCache, batches, record, window_of, windows

CHECK_EVERY = 8  # decode steps between checks of how many rows still run (each check waits for the GPU)
MAX_SHAPES = 3  # batch shapes (rows, cache length, sampling mode) whose buffers and graphs are kept
MIN_ROWS = 4  # the smallest batch the rows still running are moved into
# Rows are dropped only from responses of this many tokens up: shorter ones leave few steps to save, and each smaller
# batch captures graphs of its own (the default task's 8 tokens never reach the first check)
DROP_FROM_TOKENS = 128


class Sampler:
    def __init__(self, hf_config, dtype: torch.dtype, device: torch.device, cuda_graphs: bool, compiled: bool = False,
                 drop_stopped_rows: bool = True):
        hf_config = copy.deepcopy(hf_config)  # the actor's modules read theirs at every forward: leave it as it is
        with torch.device(device):
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=ATTENTION)
        self.model.eval().requires_grad_(False)
        self.config, self.dtype, self.device = hf_config, dtype, device
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        # attention bias for visible / hidden keys, made here: no host-to-GPU copy may happen inside a capture
        self.bias_values = torch.tensor([0.0, torch.finfo(dtype).min], dtype=dtype, device=device)
        self.shapes = {}  # (B, T, R, greedy, top_p < 1) -> Decoding
        self.graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        # per batch shape: a compile for the whole cache, one for every smaller window (see _decoding). Of the plain
        # function, not the bound method: a sampler holding its own method would be freed only by the cycle
        # collector, and inference.free_sampler needs its memory back at once.
        self.compiled_step = torch.compile(Sampler._decode_step, fullgraph=True) if compiled else None
        self.drop_stopped_rows = drop_stopped_rows and not compiled
        self.batch_rows = []  # the last generate's batch sizes, largest first (rows dropped as they stop)

    @torch.no_grad()
    def load_weights(self, module: torch.nn.Module):
        """Copy the actor's (gathered, unsharded) weights into the sampler's model, in place; LoRA adapters merged in,
        one layer at a time."""
        missing = dict(self.model.named_parameters())
        for name, value in lora.merged_weights(dict(module.named_parameters()), lora.scalings(module)):
            if name in missing:
                missing.pop(name).copy_(value)
        if missing:
            raise KitError(f"the hf engine cannot find the actor's weight '{next(iter(missing))}': this model's layout "
                           "is not a plain Hugging Face causal LM; use inference.engine=vllm")

    @torch.no_grad()
    def generate(self, input_ids, prompt_mask, max_new_tokens: int, temperature: float, top_p: float, eos: int,
                 pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample up to max_new_tokens for each left-padded prompt row (B, P); greedy when temperature is 0.
        Returns the responses (B, R), pad after each row's eos, their log-probs (B, R) and the entropy of each
        token's distribution (B, R)."""
        rows, prompt_length = input_ids.shape
        length = math.ceil(prompt_length / 64) * 64 + max_new_tokens  # bucketed, so similar prompts share a graph
        state = self._decoding(rows, length, max_new_tokens, greedy=temperature == 0, top_p=top_p < 1)
        state.temperature.fill_(temperature or 1.0)
        state.top_p.fill_(top_p)
        state.eos.fill_(eos)
        state.pad.fill_(pad)
        state.finished.zero_()
        state.step.zero_()
        state.responses.fill_(pad)
        state.log_probs.zero_()
        state.entropy.zero_()
        state.visible.zero_()
        state.visible[:, :prompt_length] = prompt_mask.bool()
        torch.arange(rows, out=state.row_ids)
        self.batch_rows = [rows]
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)

        # The prompt: one forward over every row, filling cache positions 0..P-1.
        causal = torch.ones(prompt_length, prompt_length, dtype=torch.bool, device=self.device).tril()  # (P, P)
        state.cache.slots = torch.arange(prompt_length, device=self.device)
        state.cache.window = prompt_length
        visible = (causal & state.visible[:, None, :prompt_length])[:, None]  # (B, 1, P, P)
        logits = self._last_logits(input_ids=input_ids, attention_mask=self._bias(visible),
                                   position_ids=positions, past_key_values=state.cache)  # (B, V)
        self._pick(state, logits)

        # The new tokens: one decode step each, until every row has stopped.
        state.positions.copy_(positions[:, -1:] + 1)
        state.slot.fill_(prompt_length)
        state.cache.slots = state.slot
        for step in range(1, max_new_tokens):
            if step % CHECK_EVERY == 0:
                running = int((~state.finished).sum())
                if running == 0:
                    break
                if state.smaller is not None and running <= state.smaller.rows:
                    state = self._drop_stopped_rows(state, running, filled=prompt_length + step)
            window = window_of(prompt_length + step, length)  # this step's slot, and before
            if state.graphs:
                state.graphs[window].replay()
            else:
                state.cache.window = window
                self.decode_step(state)
        return state.responses.clone(), state.log_probs.clone(), state.entropy.clone()

    def _decoding(self, rows: int, length: int, max_new_tokens: int, greedy: bool, top_p: bool) -> Decoding:
        """The buffers (and graphs) for this batch shape: kept for the next call of the same shape."""
        key = (rows, length, max_new_tokens, greedy, top_p)
        if key in self.shapes:
            return self.shapes[key]
        if len(self.shapes) >= MAX_SHAPES:
            self.shapes.pop(next(iter(self.shapes)))  # the oldest

        def zeros(*shape, dtype=torch.long):
            return torch.zeros(shape, dtype=dtype, device=self.device)

        state = Decoding(
            cache=KVCache(self.config, rows, length, self.dtype, self.device), tokens=zeros(rows, 1),
            positions=zeros(rows, 1), slot=zeros(1), step=zeros(1), visible=zeros(rows, length, dtype=torch.bool),
            finished=zeros(rows, dtype=torch.bool), responses=zeros(rows, max_new_tokens),
            log_probs=zeros(rows, max_new_tokens, dtype=torch.float32),
            entropy=zeros(rows, max_new_tokens, dtype=torch.float32), temperature=torch.ones((), device=self.device),
            top_p=torch.ones((), device=self.device), eos=zeros(), pad=zeros(), greedy=greedy, use_top_p=top_p,
            row_ids=zeros(rows), all_rows=rows,
        )
        smaller = state
        drop = self.drop_stopped_rows and max_new_tokens >= DROP_FROM_TOKENS
        while drop and (half := math.ceil(smaller.rows / 2)) >= MIN_ROWS:
            smaller.smaller = state.first_rows(half)
            smaller = smaller.smaller
        for batch in batches(state):
            batch.cache.slots = batch.slot  # decode steps write at the shared slot (the prompt's forward sets its own)
            if self.cuda_graphs:
                # largest first: a compiled step specialises on the whole cache, then compiles once more with a
                # symbolic window that every smaller window reuses (smallest first compiles three times)
                batch.graphs = {window: self._capture(batch, window) for window in reversed(windows(length))}
        self.shapes[key] = state
        return state

    def _drop_stopped_rows(self, state: Decoding, running: int, filled: int) -> Decoding:
        """Move the rows still running into the first rows of the smallest batch that holds them (the same buffers),
        their KV cache up to position `filled`; the batch's other rows are marked stopped and write pad (and 0) into
        a row that has stopped."""
        target = state.smaller
        while target.smaller is not None and running <= target.smaller.rows:
            target = target.smaller
        keep = (~state.finished).nonzero().squeeze(-1)  # (running,)
        stopped_row = state.row_ids[state.finished.nonzero()[0, 0]]
        for big, small in zip(state.cache.keys + state.cache.values, target.cache.keys + target.cache.values):
            small[:running, :, :filled] = big[keep, :, :filled]  # (the index copies first: the two share memory)
        for name in ("tokens", "positions", "visible", "row_ids"):
            getattr(target, name)[:running] = getattr(state, name)[keep]
        target.row_ids[running:] = stopped_row
        target.finished[:running] = False
        target.finished[running:] = True
        self.batch_rows.append(target.rows)
        return target

    def _capture(self, state: Decoding, window: int) -> torch.cuda.CUDAGraph:
        """Record one decode step that attends to cache positions 0..window-1. Warm-up steps on a side stream
        first, as CUDA graph capture requires; they and the capture write only into this state's buffers, which
        generate() resets before use."""
        state.cache.slots = state.slot
        state.cache.window = window
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                state.step.zero_()  # keeps the warm-up's writes inside the buffers
                self.decode_step(state)  # (the first call of a compiled step compiles it)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        state.step.zero_()
        with torch.cuda.graph(graph, pool=self.graph_pool):
            self.decode_step(state)
        return graph

    def decode_step(self, state: Decoding):
        (self.compiled_step or Sampler._decode_step)(self, state)

    def _decode_step(self, state: Decoding):
        """Feed each row's last token, pick the next one. Only tensor operations on the state's buffers (the
        cache positions come from state.slot), so it can be captured as a CUDA graph."""
        state.visible.index_fill_(1, state.slot, True)  # a token attends to itself
        visible = state.visible[:, None, None, :state.cache.window]  # (B, 1, 1, window)
        logits = self._last_logits(input_ids=state.tokens, attention_mask=self._bias(visible),
                                   position_ids=state.positions, past_key_values=state.cache)  # (B, V)
        self._pick(state, logits)
        state.positions.add_(1)
        state.slot.add_(1)

    def _last_logits(self, **inputs) -> torch.Tensor:
        """The logits (B, V) of each row's last position. Through the decoder and the LM head directly, not the
        model class's forward: verl's fused kernels replace that forward (for every model of the class in the
        worker, this copy included) with one that returns log-probs instead of logits."""
        hidden = self.model.get_decoder()(**inputs, use_cache=True).last_hidden_state[:, -1]  # (B, hidden)
        return self.model.get_output_embeddings()(hidden)

    def _pick(self, state: Decoding, logits: torch.Tensor):
        """Sample (or take the argmax of) each row's next token from its logits (B, V), record it and its
        log-prob at state.step, and mark rows that wrote eos as finished."""
        log_probs = torch.log_softmax(logits.float() / state.temperature, dim=-1)  # (B, V)
        if state.greedy:
            token = log_probs.argmax(-1)
        else:
            probs = log_probs.exp()
            entropy = -(probs * log_probs).sum(-1)  # (B,), verl's entropy of the temperature-scaled distribution
            record(state, state.entropy, torch.where(state.finished, 0.0, entropy))
            if state.use_top_p:
                probs = top_p_filter(probs, state.top_p)
            # argmax of p / Exp(1) noise draws from p (the exponential-race form of sampling), with no host sync
            noise = torch.empty((state.all_rows, probs.shape[-1]), device=probs.device).exponential_()  # (B0, V)
            if state.rows < state.all_rows:  # each row its own row's draw, whichever rows still run
                noise = noise.index_select(0, state.row_ids)
            token = (probs / noise.clamp_(min=torch.finfo(probs.dtype).tiny)).argmax(-1)
        token_log_prob = log_probs.gather(-1, token[:, None]).squeeze(-1)  # (B,)
        # the trainer's log-prob of the token: temperature-scaled, without the top-p cut (verl's convention)
        token = torch.where(state.finished, state.pad, token)
        record(state, state.responses, token)
        record(state, state.log_probs, torch.where(state.finished, 0.0, token_log_prob))
        state.finished |= token == state.eos
        state.tokens.copy_(token[:, None])
        state.step.add_(1)

    def _bias(self, visible: torch.Tensor) -> torch.Tensor:
        """An additive attention mask from a boolean one: 0 where visible, the dtype's minimum elsewhere."""
        return torch.where(visible, self.bias_values[0], self.bias_values[1])


def top_p_filter(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the tokens outside the smallest set whose probability reaches top_p (the most likely always stays)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # mass before this token already reaches top_p
    return probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
