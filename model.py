"""A GPT written from scratch: the soft Q-function of IQLearn.

A decoder-only transformer (GPT-2 layout: pre-LayerNorm blocks, causal self-attention, GELU MLP,
tied input/output embeddings). Its logits at position t are read as Q(s_t, .), the soft Q-values
of every next token given the prefix s_t; the loss that gives them that meaning lives in
iqlearn.py, so the model returns logits and nothing else.

A value head (optional, `GPTConfig.value_head`): the paper writes the objective in (pi, v) form,
Q(s, a) = v(s) + log pi(a|s). Read as logits, Q ties each state's value to the scale of its
logits, so IQLearn can move V(s) only by bending the policy. The head adds a learned scalar per
state, Q(s, .) = lm_head(h) + v(h) * 1: softmax ignores it (the policy, sampling and cross-entropy
are unchanged), while V(s) = logsumexp Q(s, .) shifts by v(h), so the TD term can fix the values
through v instead of the logits.

GPT-2: with `bias=True` and `gelu_approximate="tanh"` this is OpenAI's GPT-2 layout exactly, and
gpt2.py reads its published weights (`--init_from gpt2`); this file imports nothing of the project.

Incremental decoding: pass a `KVCache` to `forward` and the model appends the new positions' keys
and values to it, so generating n tokens costs n short forward passes instead of n full ones.
Prompts of different lengths are left-padded; the cache records how many pad tokens each row has,
and attention never looks at them.
"""

from __future__ import annotations  # the classes below name the KV cache, defined after them

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = False        # GPT-2 has biases in every Linear and LayerNorm
    gelu_approximate: str = "none"  # "tanh": GPT-2's tanh approximation of GELU (F.gelu's argument)
    value_head: bool = False  # Q(s, .) = lm_head(h) + v(h): a per-state offset (module docstring)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, kv: LayerKV | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv is not None:
            k, v = kv.extend(k, v)
        # Without a cache the plain causal mask applies (and the fused flash kernel with it); with a
        # cache the caller built an explicit mask that also hides left padding.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.gelu_approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.gelu_approximate)))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, kv: LayerKV | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask, kv)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix embeds tokens and scores them
        self.apply(self._init_weights)
        # GPT-2: each block adds two residual contributions, so shrink them to keep the residual
        # stream's variance from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # Created last and zeroed: a model with the head starts as the same function as one without
        # (same seed, same other weights). At lam = 0 its gradient is zero up to rounding: it adds the
        # same v(h) to every logit of a state, and cross-entropy's gradient softmax - onehot sums to 0
        # (train.py freezes it there, so rounding noise does not move it).
        self.value_head = nn.Linear(config.n_embd, 1) if config.value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; the position table is left out by default (as in the 6N FLOPs rule)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def new_cache(self, n_pad: torch.Tensor) -> KVCache:
        """An empty KV cache for a batch whose rows start with n_pad[b] pad tokens."""
        return KVCache(self.config.n_layer, self.config.block_size, n_pad)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """Token ids [B, T] -> logits [B, T, vocab_size], i.e. Q(s_t, .) at every position t.

        With a cache, idx holds the positions after the cached ones (a whole prompt, then one token
        at a time) and the cache grows by T. last_only: logits of the last position only [B, 1, V]
        (decoding needs no more, and a prompt's [B, T, V] logits can be large).
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} is longer than block_size "
                             f"{self.config.block_size}")
        slots = torch.arange(start, start + T, device=idx.device)
        if cache is None:
            pos, attn_mask = slots, None
        else:
            pos, attn_mask = self._cached_positions_and_mask(slots, cache.n_pad)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, None if cache is None else cache.layers[i])
        if cache is not None:
            cache.length += T
        if last_only:
            x = x[:, -1:]
        h = self.ln_f(x)
        logits = self.lm_head(h)
        if self.value_head is not None:
            logits = logits + self.value_head(h)  # [B, T, 1] broadcast: the same v(s_t) for every token
        return logits

    @staticmethod
    def _cached_positions_and_mask(slots: torch.Tensor, n_pad: torch.Tensor):
        """Positions [B, T] counted from each row's first real token, and the attention mask
        [B, 1, T, S] that lets slot i see slot j iff j <= i and j is not padding. A pad slot may see
        itself, so no softmax row is empty (an empty one would give NaN and poison the cache)."""
        keys = torch.arange(int(slots[-1]) + 1, device=slots.device)
        pos = (slots[None, :] - n_pad[:, None]).clamp(min=0)
        causal = keys[None, None, :] <= slots[None, :, None]
        not_pad = keys[None, None, :] >= n_pad[:, None, None]
        itself = keys[None, None, :] == slots[None, :, None]
        return pos, (causal & (not_pad | itself)).unsqueeze(1)

    def rows_per_batch(self) -> int:
        """How many sequences to push through at once: a [rows, block_size, vocab] logits tensor of
        at most 2^26 floats (256 MB), so a full 50k vocabulary gets small batches, a compact one large."""
        return max(1, min(512, 2 ** 26 // (self.config.block_size * self.config.vocab_size)))

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, eos_id: int | None = None,
                 generator: torch.Generator | None = None,
                 forced: Callable[[int, int], list[int]] | None = None) -> list[list[int]]:
        """Continue each prompt (a list of token ids) by up to max_new_tokens tokens, rows_per_batch()
        prompts at a time. temperature 0 is greedy. A row stops after emitting eos_id (kept in its
        output) or when the block is full. Returns the new tokens of each row.

        forced(row, token) is told every token row `row` (its index in `prompts`) emits and returns
        tokens the row must emit next instead of its own choice (a calculator writing a result);
        each row queues them."""
        n = self.rows_per_batch()
        return [out for i in range(0, len(prompts), n)
                for out in self._generate_batch(prompts[i:i + n], max_new_tokens, temperature, top_k, eos_id,
                                                generator, forced, first_row=i)]

    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                        top_k: int | None, eos_id: int | None, generator: torch.Generator | None,
                        forced: Callable[[int, int], list[int]] | None, first_row: int) -> list[list[int]]:
        """generate() for one batch, rows first_row.. of the whole: the prompts left-padded, decoded
        together on one KV cache."""
        device = self.wte.weight.device
        idx, n_pad = left_pad(prompts, device)
        max_new_tokens = min(max_new_tokens, self.config.block_size - idx.size(1))
        cache = self.new_cache(n_pad)
        out = torch.empty(len(prompts), max(max_new_tokens, 0), dtype=torch.long, device=device)
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        computed = torch.arange(len(prompts), device=device)  # the rows the cache (and idx) hold
        queues = [[] for _ in prompts]
        for step in range(max_new_tokens):
            logits = self(idx, cache, last_only=True)[:, -1, :].float()
            # Every row draws, dropped or not (zero logits), so each row's draw from the generator
            # is the one it would get if no row had been dropped.
            if len(computed) < len(prompts):
                logits = logits.new_zeros(len(prompts), logits.size(-1)).index_copy_(0, computed, logits)
            idx = sample_next(logits, temperature, top_k, generator)
            if forced is not None:  # a row with queued tokens emits the next one, not its choice
                tokens = idx[:, 0].tolist()
                for row, queue in enumerate(queues):
                    if queue:
                        tokens[row] = queue.pop(0)
                    queue += forced(first_row + row, tokens[row])
                idx = torch.tensor(tokens, device=device)[:, None]
            out[:, step] = idx[:, 0]
            if eos_id is not None:
                finished |= idx[:, 0] == eos_id
                if finished.all():
                    out = out[:, :step + 1]
                    break
                # Rows that have ended only make junk (cut below): once a quarter of the computed
                # rows have, the cache drops them, so decoding costs what the live rows need.
                done_here = finished[computed]
                if 4 * int(done_here.sum()) >= len(computed):
                    computed = computed[~done_here]
                    cache.keep(~done_here)
            idx = idx[computed]
        return [cut_after_eos(row, eos_id) for row in out.tolist()]

    def configure_optimizer(self, weight_decay: float, learning_rate: float,
                            betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices and embeddings only (not on norms or biases), using
        the fused kernel where this device has one."""
        params = list(self.parameters())  # a frozen one (no gradient) is one AdamW skips
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        try:
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True)
        except RuntimeError:  # no fused AdamW for this device (e.g. older MPS builds)
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


# ----------------------------------------------------------------------------------------------
# Incremental decoding: the KV cache, left padding, the next token

class LayerKV:
    """Keys and values of one attention layer for the positions seen so far: [B, n_head, S, head_dim]."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k = self.v = None
        self.length = 0

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' k, v and return those of all positions so far."""
        if self.k is None:  # allocate on first use, in whatever dtype autocast gave us
            B, H, _, D = k.shape
            self.k = k.new_empty(B, H, self.max_len, D)
            self.v = v.new_empty(B, H, self.max_len, D)
        end = self.length + k.size(2)
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Everything incremental decoding remembers: per-layer keys/values and each row's left padding."""

    def __init__(self, n_layer: int, max_len: int, n_pad: torch.Tensor):
        self.layers = [LayerKV(max_len) for _ in range(n_layer)]
        self.n_pad = n_pad  # [B] number of pad tokens at the start of each row
        self.length = 0     # positions processed so far (pads included)

    def keep(self, rows: torch.Tensor) -> None:
        """Continue with these rows only (a bool mask or indices): generate drops finished ones."""
        self.n_pad = self.n_pad[rows]
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[rows], layer.v[rows]

    def reorder(self, rows: torch.Tensor) -> None:
        """Row b continues from row rows[b] (a batch of the same size): beam search uses it to
        follow the surviving beams. Only rows that change are copied, and only the positions
        filled so far, not the whole block."""
        moved = (rows != torch.arange(len(rows), device=rows.device)).nonzero().squeeze(1)
        self.n_pad = self.n_pad[rows]
        for layer in self.layers:
            if layer.k is not None and len(moved):  # the right side is gathered before it is written
                layer.k[moved, :, :layer.length] = layer.k[rows[moved], :, :layer.length]
                layer.v[moved, :, :layer.length] = layer.v[rows[moved], :, :layer.length]


def left_pad(rows: list[list[int]], device: torch.device | str, pad_id: int = 0):
    """Stack token lists into one [B, T] tensor, padding on the left; also return the pad counts."""
    if not rows or min(len(r) for r in rows) == 0:
        raise ValueError("every prompt needs at least one token")
    width = max(len(r) for r in rows)
    idx = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], device=device)
    n_pad = torch.tensor([width - len(r) for r in rows], device=device)
    return idx, n_pad


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """Next token [B, 1] from last-position logits [B, V]: argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted to the top_k tokens when top_k is given."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def cut_after_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    """Drop what follows the first eos_id (rows that finished early keep sampling junk)."""
    if eos_id is not None and eos_id in tokens:
        return tokens[:tokens.index(eos_id) + 1]
    return tokens
