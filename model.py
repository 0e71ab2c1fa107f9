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
`GPT.from_pretrained("gpt2")` loads its published weights (their Conv1D matrices transposed).

Incremental decoding: pass a `KVCache` to `forward` and the model appends the new positions' keys
and values to it, so generating n tokens costs n short forward passes instead of n full ones.
Prompts of different lengths are left-padded; the cache records how many pad tokens each row has,
and attention never looks at them.
"""

import contextlib
import json
import math
import os
import re
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


# OpenAI's published GPT-2 sizes (Radford et al. 2019): name -> (n_layer, n_head, n_embd). All have
# 1,024 positions and the 50,257-token vocabulary of the BPE that data.py uses.
GPT2_SIZES = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280),
              "gpt2-xl": (48, 25, 1600)}
GPT2_VOCAB = 50257


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
        # (same seed, same other weights). At lam = 0 its gradient is zero too: it adds the same
        # v(h) to every logit of a state, and cross-entropy's gradient softmax - onehot sums to 0.
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

    @classmethod
    def from_pretrained(cls, name_or_dir: str, block_size: int | None = None, dropout: float = 0.0,
                        value_head: bool = False) -> "GPT":
        """OpenAI's GPT-2 as this model: `gpt2`, `gpt2-medium`, `gpt2-large` or `gpt2-xl` from the
        Hugging Face Hub (needs the optional `huggingface_hub` and `safetensors`, and network), or a
        local folder in the Hugging Face layout (config.json + model.safetensors or
        pytorch_model.bin). The position table is cropped to block_size (default: all of it); a
        value head starts at zero. Raises CheckpointError, with one line saying why, when the
        weights cannot be had or are not a GPT-2 this model implements."""
        folder = name_or_dir if os.path.isdir(name_or_dir) else fetch_gpt2(name_or_dir)
        config = config_from_hf(read_hf_config(folder), block_size, dropout, value_head)
        model = cls(config)
        load_weights(model, weights_from_hf(read_hf_weights(folder), config.block_size))
        return model

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
        queues = [[] for _ in prompts]
        for step in range(max_new_tokens):
            logits = self(idx, cache, last_only=True)[:, -1, :].float()
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
        return [cut_after_eos(row, eos_id) for row in out.tolist()]

    def configure_optimizer(self, weight_decay: float, learning_rate: float,
                            betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices and embeddings only (not on norms or biases), using
        the fused kernel where this device has one."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        try:
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True)
        except RuntimeError:  # no fused AdamW for this device (e.g. older MPS builds)
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


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


# ----------------------------------------------------------------------------------------------
# Device and precision

def pick_device(flag: str = "auto") -> str:
    """cuda, else mps, else cpu; or the device the flag names, if it works here (ValueError if not)."""
    if flag != "auto":
        try:
            torch.empty(0, device=flag)
        except Exception as e:  # unknown name, no such backend in this build, no such GPU
            raise ValueError(f"--device {flag} is not usable here ({str(e).splitlines()[0]})") from None
        return flag
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def pick_dtype(flag: str, device: str) -> torch.dtype:
    """The autocast precision: bf16 on CUDA where supported, else fp16 (which needs a GradScaler);
    float32 elsewhere; or the one the flag names."""
    if flag != "auto":
        return getattr(torch, flag)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# ----------------------------------------------------------------------------------------------
# Memory of a training step, on paper

def step_memory(config: GPTConfig, rows: int, seq_len: int, half: bool) -> dict[str, int]:
    """Bytes of one training step (offline IQLearn or MLE through iqlearn_loss, AdamW, dropout 0,
    fused attention) at its peak, by part. half: 16-bit autocast (bf16 or fp16), else float32.

      weights_adamw  fp32 weights and AdamW's two moments, held between steps: 12 bytes a parameter
      activations    what autograd keeps for backward, per token: in each block LN input, LN
                     output, q/k/v, attention output, LN input, LN output, MLP hidden before and
                     after GELU: 16 * n_embd floats in float32; with autocast the LN inputs stay fp32
                     and the rest is 16-bit copies: 36 * n_embd bytes. Plus each block's LayerNorm
                     mean/rstd and attention's log-sum-exp, and ln_f's input and output once. With
                     autocast also the 16-bit copy of every Linear weight (lm_head's too).
      logits         the [rows, T, V] buffers around the loss: 8 bytes an entry in float32 (the
                     logits and logsumexp's temporary, later the logits and their gradient); 10 with
                     autocast (16-bit logits, their float32 copy, the temporary)
      gradients      4 bytes a parameter, filled in while backward frees the activations; at the end
                     two more copies of the tied embedding's, whose two contributions are summed (one
                     fewer is live with autocast: there this part is an upper bound)
      peak           weights_adamw + the larger of activations + logits (at the loss) and gradients
                     (at the end of backward)

    Not counted: the CUDA context and allocator slack (on a GPU, add about 1 GiB), dropout masks.
    bench.py compares this with the peak the CPU profiler records."""
    counts = param_counts(config)
    n_params = sum(counts.values())
    tokens, h, V = rows * seq_len, config.n_embd, config.vocab_size
    per_block = (36 if half else 64) * h + 2 * 2 * 4 + 4 * config.n_head  # + LN stats, attention lse
    parts = {"weights_adamw": 12 * n_params,
             "activations": tokens * (config.n_layer * per_block + (6 if half else 8) * h)
                            + (2 * (counts["linear"] + counts["embedding"]) if half else 0),
             "logits": tokens * V * (10 if half else 8),
             "gradients": 4 * n_params + 8 * counts["embedding"]}
    parts["peak"] = parts["weights_adamw"] + max(parts["activations"] + parts["logits"], parts["gradients"])
    return parts


def param_counts(config: GPTConfig) -> dict[str, int]:
    """Parameters of GPT(config) by kind, counted without building it (gpt2-xl has 1.6 billion):
    the token embedding (tied with lm_head, so once), the position table, the LayerNorms, and
    every Linear's weight and bias but lm_head's (it is the embedding)."""
    h, L, b = config.n_embd, config.n_layer, int(config.bias)
    per_block = (3 * h * h + 3 * h * b) + (h * h + h * b) + (4 * h * h + 4 * h * b) + (4 * h * h + h * b)
    return {"embedding": config.vocab_size * h, "positions": config.block_size * h,
            "norms": (2 * L + 1) * h * (1 + b),
            "linear": L * per_block + (h + 1 if config.value_head else 0)}


# ----------------------------------------------------------------------------------------------
# Checkpoints: one file, written atomically and durably, read back with a clear error when it is not one.

class CheckpointError(ValueError):
    """A missing, unreadable or incomplete checkpoint."""


CHECKPOINT_KEYS = ("model", "model_args", "config", "vocab", "iter_num")


def save_checkpoint(checkpoint: dict, path: str) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, then fsync the directory.

    The rename is atomic: a reader (sample.py) opens either the previous file or the new one, never
    a part, and a crash mid-write leaves the previous one. The fsyncs make it durable: without the
    first, a power loss soon after the rename can leave an empty or truncated file under the new
    name; without the second, the rename itself may not survive. A failed write (disk full,
    permission denied) removes the temporary file and raises OSError; `path` is untouched."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # OSError, or an interrupt: never leave a partial file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: str, device: str = "cpu") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unpickling refusal: all "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this project (missing {', '.join(missing)})")
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> GPT:
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict(checkpoint["model"])
    return model


def load_weights(model: GPT, state: dict) -> None:
    """Load a checkpoint's weights into `model`. A model with a value head accepts weights that
    have none (a checkpoint from before the head, an MLE run, GPT-2): the head keeps its zero init."""
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"the checkpoint's {wrong[0]} is {tuple(state[wrong[0]].shape)}, this model's "
                              f"{tuple(own[wrong[0]].shape)}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("value_head.")]
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint's weights do not fit this model (missing "
                              f"{', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'})")


# ----------------------------------------------------------------------------------------------
# Published GPT-2 weights in the Hugging Face layout. The packages that fetch and read them are
# optional: imported here, on this path only, never by a checkpoint of ours.

def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def fetch_gpt2(name: str) -> str:
    """The local folder of GPT-2 `name` from the Hugging Face Hub (downloaded once, then cached)."""
    if name not in GPT2_SIZES:
        raise CheckpointError(f"{name} is neither a GPT-2 ({', '.join(GPT2_SIZES)}) nor a folder")
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError(f"fetching {name} needs the optional Hugging Face packages: "
                              "pip install huggingface_hub safetensors") from None
    try:
        return huggingface_hub.snapshot_download(f"openai-community/{name}",
                                                 allow_patterns=["config.json", "model.safetensors"])
    except Exception as e:  # no network, hub down, disk full: many exception types, one message
        raise CheckpointError(f"could not fetch {name} from the Hugging Face Hub ({first_line(e)}); offline? "
                              f"download openai-community/{name} (config.json, model.safetensors) elsewhere "
                              "and pass its folder") from None


def read_hf_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable Hugging Face config ({first_line(e)})") from None


def config_from_hf(hf: dict, block_size: int | None, dropout: float, value_head: bool) -> GPTConfig:
    """Our GPTConfig for a Hugging Face GPT-2 config.json; CheckpointError for a variant this model
    does not implement (another architecture, activation, MLP width, norm or attention scaling)."""
    try:
        n_layer, n_head, n_embd, n_positions, vocab_size = (
            int(hf[k]) for k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"config.json has no usable {e} (is this a GPT-2?)") from None
    gelu = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}.get(hf.get("activation_function"))
    implemented = {"model_type": hf.get("model_type") == "gpt2", "activation_function": gelu is not None,
                   "n_inner": hf.get("n_inner") in (None, 4 * n_embd),
                   "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-5) == 1e-5,  # nn.LayerNorm's
                   "scale_attn_weights": hf.get("scale_attn_weights", True),
                   "scale_attn_by_inverse_layer_idx": not hf.get("scale_attn_by_inverse_layer_idx", False),
                   "tie_word_embeddings": hf.get("tie_word_embeddings", True)}
    unknown = [k for k, ok in implemented.items() if not ok]
    if unknown:
        raise CheckpointError(f"this GPT-2 variant is not implemented here ({unknown[0]}={hf.get(unknown[0])!r})")
    block_size = block_size or n_positions
    if block_size > n_positions:
        raise CheckpointError(f"block_size {block_size} is longer than the model's {n_positions} positions")
    return GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                     n_embd=n_embd, dropout=dropout, bias=True, gelu_approximate=gelu, value_head=value_head)


def read_hf_weights(folder: str) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (needs the optional `safetensors`) or pytorch_model.bin."""
    safetensors_path, bin_path = (os.path.join(folder, f) for f in ("model.safetensors", "pytorch_model.bin"))
    if os.path.isfile(safetensors_path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"reading {safetensors_path} needs the optional package: "
                                  "pip install safetensors") from None
        path, load = safetensors_path, load_file
    elif os.path.isfile(bin_path):
        path, load = bin_path, lambda p: torch.load(p, map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{folder} holds neither model.safetensors nor pytorch_model.bin")
    try:
        return load(path)
    except Exception as e:  # truncated or foreign file
        raise CheckpointError(f"{path} is not readable ({first_line(e)})") from None


# Hugging Face's GPT-2 stores these as Conv1D, [in, out]: nn.Linear's weight is [out, in].
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def weights_from_hf(hf_state: dict[str, torch.Tensor], block_size: int) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 weights under our names: h.i -> blocks.i, Conv1D matrices transposed, the
    position table cropped to block_size. Dropped: the causal-mask buffers (attn.bias,
    attn.masked_bias) and lm_head.weight, which is wte's (tied, as ours)."""
    state = {}
    for key, tensor in hf_state.items():
        key = key.removeprefix("transformer.")  # GPT2LMHeadModel's prefix; GPT2Model has none
        if key == "lm_head.weight" or re.fullmatch(r"h\.\d+\.attn\.(masked_)?bias", key):
            continue
        key = re.sub(r"^h\.", "blocks.", key)
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        state[key] = tensor[:block_size] if key == "wpe.weight" else tensor
    if "wte.weight" in state:
        state["lm_head.weight"] = state["wte.weight"]
    return state
