"""Published GPT-2 weights (OpenAI's, in the Hugging Face layout) as this project's GPT, and ours back
out in that layout: skip this file on a first reading.

`train.py --init_from gpt2` calls it (in code: `runfiles.model_from_checkpoint(gpt2_checkpoint("gpt2"))`).
It fetches a GPT-2 from the Hugging Face Hub or reads a local folder (config.json + model.safetensors
or pytorch_model.bin), checks that the variant is one model.py implements (GPT-2 with `bias=True` and the tanh GELU), and renames the
tensors to ours: GPT-2 stores its attention and MLP matrices as Conv1D, [in, out], which nn.Linear
holds transposed. The vocabulary is GPT-2's own 50,257 tokens, unpadded. The packages that fetch and
read the weights (huggingface_hub, safetensors) are optional: imported here, on this path only;
checkpoints this project writes never need them. `config_to_hf` and `weights_to_hf` are the inverse
renaming, which export.py writes as a Hugging Face folder.
"""

import json
import os
import re
from dataclasses import asdict, replace

import torch

from data import Vocab
from model import GPTConfig
from errors import CheckpointError

# OpenAI's published GPT-2 sizes (Radford et al. 2019): name -> (n_layer, n_head, n_embd). All have
# 1,024 positions and the 50,257-token vocabulary of the BPE that data.py uses.
GPT2_SIZES = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280),
              "gpt2-xl": (48, 25, 1600)}
GPT2_VOCAB = 50257


def gpt2_checkpoint(name_or_dir: str, block_size: int | None = None, dropout: float = 0.0,
                    value_head: bool = False) -> dict:
    """A GPT-2 (`gpt2` ... `gpt2-xl` from the Hub, or a local Hugging Face folder) as a checkpoint of
    ours to start from: {"model": weights under our names, "model_args": the GPTConfig's fields,
    "vocab": GPT-2's full, unpadded vocabulary}. The position table is cropped to block_size
    (default: all of it). A folder with a value head (examples/trl_iqlearn.py saves one) gives a
    checkpoint with it. Raises CheckpointError, with one line saying why, when the weights cannot
    be had or are not a GPT-2 this model implements."""
    folder = name_or_dir if os.path.isdir(name_or_dir) else fetch_gpt2(name_or_dir)
    config = config_from_hf(read_hf_config(folder), block_size, dropout, value_head)
    vocab = Vocab(None, padded=False)  # its rows are GPT-2's token ids, as the tokenizer numbers them
    if config.vocab_size != vocab.size:
        raise CheckpointError(f"{name_or_dir} has {config.vocab_size} token embeddings; the GPT-2 tokenizer has "
                              f"{vocab.size} tokens")
    weights = weights_from_hf(read_hf_weights(folder), config.block_size)
    if "value_head.weight" in weights:  # a head examples/trl_iqlearn.py trained: it stays, as a checkpoint's does
        config = replace(config, value_head=True)
    return {"model": weights, "model_args": asdict(config), "vocab": vocab.state_dict()}


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
    attn.masked_bias) and lm_head.weight, which is wte's (tied, as ours). The value head that
    examples/trl_iqlearn.py saves with the weights, iqlearn_value_head.v.*, is ours: value_head.*."""
    state = {}
    for key, tensor in hf_state.items():
        key = key.removeprefix("transformer.")  # GPT2LMHeadModel's prefix; GPT2Model has none
        if key == "lm_head.weight" or re.fullmatch(r"h\.\d+\.attn\.(masked_)?bias", key):
            continue
        key = re.sub(r"^h\.", "blocks.", key).replace("iqlearn_value_head.v.", "value_head.")
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        state[key] = tensor[:block_size] if key == "wpe.weight" else tensor
    if "wte.weight" in state:
        state["lm_head.weight"] = state["wte.weight"]
    return state


# ----------------------------------------------------------------------------------------------
# The inverse: our model under Hugging Face GPT-2's names (export.py writes them as a folder)

# Our GELU -> Hugging Face's name for it: ACT2FN["gelu"] is torch's exact erf GELU (nn.functional.gelu),
# ACT2FN["gelu_new"] the tanh approximation OpenAI's GPT-2 uses; config_from_hf maps both back.
HF_ACTIVATION = {"none": "gelu", "tanh": "gelu_new"}


def config_to_hf(config: GPTConfig, vocab_size: int, eos_id: int) -> dict:
    """The Hugging Face GPT-2 config.json of our GPTConfig with vocab_size token rows: the same
    architecture (n_positions = block_size, our GELU's name, nn.LayerNorm's eps 1e-5, tied
    embeddings) and our dropout; config_from_hf reads it back as this GPTConfig with bias=True."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
            "n_positions": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
            "n_head": config.n_head, "n_inner": None, "activation_function": HF_ACTIVATION[config.gelu_approximate],
            "layer_norm_epsilon": 1e-5, "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "tie_word_embeddings": True, "bos_token_id": eos_id,
            "eos_token_id": eos_id, "initializer_range": 0.02, "dtype": "float32"}


def weights_to_hf(state: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel's names, the inverse of weights_from_hf: blocks.i -> h.i
    under `transformer.`, Linear matrices transposed to Conv1D's [in, out], the token table cropped
    to its first vocab_size rows, each tensor a float32 copy of its own (safetensors writes no shared
    or strided tensors; config_to_hf says float32). A bias-free model (bias=False) gets zero biases:
    GPT-2 has one after every Linear and LayerNorm, and zero adds nothing. Left out: lm_head.weight
    (tied to wte: save_pretrained leaves it out too) and value_head.* (GPT-2 has no value head; the
    caller says so)."""
    hf = {}
    for key, tensor in state.items():
        if key == "lm_head.weight" or key.startswith("value_head."):
            continue
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        if key == "wte.weight":
            tensor = tensor[:vocab_size]
        hf[_hf_name(key)] = tensor.float().contiguous().clone()
        bias = key.removesuffix(".weight") + ".bias"
        if key.endswith(".weight") and not key.startswith(("wte.", "wpe.")) and bias not in state:
            hf[_hf_name(bias)] = torch.zeros(state[key].shape[0])  # Linear [out, in], LayerNorm [C]: [out]
    return hf


def _hf_name(key: str) -> str:
    return "transformer." + re.sub(r"^blocks\.", "h.", key)
