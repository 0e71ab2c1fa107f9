"""GPT-2's published weights in our model, checked against Hugging Face's own GPT-2 on a tiny random
one; fine-tuning it with train.py --init_from, evaluating with the calculator, resuming without the
optional packages; the one-line errors when the weights cannot be had."""

import importlib.util
import json
import os
import re
import shutil
import sys

import pytest
import torch

import sample
import train
from errors import CheckpointError
from gpt2 import (config_from_hf, config_to_hf, gpt2_checkpoint, read_hf_config, read_hf_weights, weights_from_hf,
                  weights_to_hf)
from runfiles import load_checkpoint, model_from_checkpoint

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="the reference GPT-2 needs the optional transformers (pip install transformers safetensors)")

# GSM8K's format, calculator annotations as written; short, so a 96-token block holds them.
GSM8K_LINES = [
    {"question": "Ann has 3 bags of 4 pens. How many pens?", "answer": "She has 3*4=<<3*4=12>>12 pens.\n#### 12"},
    {"question": "Ben had 48 clips and sold half. How many are left?", "answer": "48/2=<<48/2=24>>24\n#### 24"},
    {"question": "A pen costs $1.50. What do 4 pens cost?", "answer": "4*1.50=<<4*1.50=6>>6\n#### 6"},
    {"question": "Cara reads 12 pages and 15 more. How many pages?", "answer": "12+15=<<12+15=27>>27\n#### 27"},
    {"question": "Dan has 1,200 cards and gives 200 away. How many are left?",
     "answer": "1,200-200=<<1200-200=1000>>1000\n#### 1000"},
    {"question": "Eva has 7 apples and eats 2. How many are left?", "answer": "7-2=<<7-2=5>>5\n#### 5"},
]

OPTIONAL = ("transformers", "huggingface_hub", "safetensors", "safetensors.torch")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A random 2-layer, 64-wide GPT-2 with the real 50,257-token vocabulary, saved as Hugging Face
    saves it. Biases and LayerNorm parameters are perturbed away from their 0 / 1 init, so a
    loader that dropped one would show in the logits."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128)
    reference = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in reference.parameters():
            if p.dim() == 1:
                p.add_(0.5 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    reference.save_pretrained(folder)
    return str(folder), reference


@needs_transformers
def test_logits_equal_hugging_face_gpt2_with_and_without_the_kv_cache(tiny_gpt2):
    folder, reference = tiny_gpt2
    ours = model_from_checkpoint(gpt2_checkpoint(folder)).eval()
    assert ours.config.bias and ours.config.gelu_approximate == "tanh" and ours.config.vocab_size == 50257
    tokens = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(tokens).logits
        assert torch.allclose(ours(tokens), expected, atol=1e-5, rtol=0)
        cache = ours.new_cache(torch.zeros(2, dtype=torch.long))
        steps = [ours(tokens[:, :8], cache)] + [ours(tokens[:, t:t + 1], cache) for t in range(8, 24)]
    assert torch.allclose(torch.cat(steps, dim=1), expected, atol=1e-5, rtol=0)


@needs_transformers
def test_block_size_crops_the_position_table_and_a_value_head_starts_at_zero(tiny_gpt2):
    folder, reference = tiny_gpt2
    ours = model_from_checkpoint(gpt2_checkpoint(folder, block_size=32, value_head=True)).eval()
    assert ours.wpe.weight.shape == (32, 64) and ours.value_head is not None
    tokens = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(ours(tokens), reference(tokens).logits, atol=1e-5, rtol=0)
    with pytest.raises(CheckpointError, match="longer than the model's 128 positions"):
        gpt2_checkpoint(folder, block_size=129)


@needs_transformers
def test_weights_to_hf_and_config_to_hf_invert_the_import(tiny_gpt2):
    """export.py's renaming back: Hugging Face's own saved tensors come back under their names."""
    folder, _ = tiny_gpt2
    saved = read_hf_weights(folder)
    config = config_from_hf(read_hf_config(folder), None, 0.0, False)
    back = weights_to_hf(weights_from_hf(saved, config.block_size), config.vocab_size)
    expected = {k: v for k, v in saved.items()  # less the tied head and any causal-mask buffers
                if k != "lm_head.weight" and not re.fullmatch(r"transformer\.h\.\d+\.attn\.(masked_)?bias", k)}
    assert back.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(back[key], tensor), key
    assert config_from_hf(config_to_hf(config, config.vocab_size, eos_id=50256), None, 0.0, False) == config


def block_optional_packages(monkeypatch):
    """Make importing the optional packages fail, as on a machine without them."""
    for name in OPTIONAL:
        monkeypatch.setitem(sys.modules, name, None)


@needs_transformers
def test_fine_tune_gpt2_on_gsm8k_evaluate_with_the_calculator_and_resume(tiny_gpt2, tmp_path, monkeypatch, capsys):
    folder, reference = tiny_gpt2
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in GSM8K_LINES))
    out = tmp_path / "out"
    assert train.main(["--init_from", folder, "--data", str(data), "--block_size", "96", "--max_iters", "3",
                       "--batch_size", "2", "--eval_interval", "100", "--eval_problems", "0", "--eval_iters", "1",
                       "--out_dir", str(out)]) == 0
    checkpoint = load_checkpoint(str(out / "ckpt.pt"))
    args = checkpoint["model_args"]
    assert (args["bias"], args["gelu_approximate"], args["vocab_size"], args["block_size"]) == (True, "tanh", 50257, 96)
    assert checkpoint["vocab"] == {"gpt2_ids": None, "padded": False}  # GPT-2's own table: no padding rows
    # It started from GPT-2's weights: three small AdamW steps in warm-up move them by about 1e-4.
    ln_bias = reference.transformer.h[0].ln_1.bias.detach()
    assert torch.allclose(checkpoint["model"]["blocks.0.ln_1.bias"], ln_bias, atol=1e-3)

    block_optional_packages(monkeypatch)  # what the run wrote needs none of them
    capsys.readouterr()
    assert sample.main(["--out_dir", str(out), "--eval", "--calculator", "--json", "--num_problems", "1",
                        "--num_samples", "1", "--beam", "1", "--max_new_tokens", "12"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["accuracy_greedy_calculator"] <= 1 and 0 <= metrics["accuracy_greedy"] <= 1
    assert train.main(["--resume", "--max_iters", "4", "--out_dir", str(out)]) == 0
    assert load_checkpoint(str(out / "ckpt.pt"))["iter_num"] == 4


def one_line_error(argv, capsys) -> str:
    code = train.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_without_the_optional_package_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    block_optional_packages(monkeypatch)
    err = one_line_error(["--init_from", "gpt2", "--out_dir", str(tmp_path / "out")], capsys)
    assert "pip install huggingface_hub safetensors" in err


def test_without_network_the_error_is_one_line(tmp_path, monkeypatch, capsys):
    hub = pytest.importorskip("huggingface_hub")

    def offline(repo_id, **kwargs):  # what snapshot_download raises here, with no network
        raise hub.errors.LocalEntryNotFoundError(
            "Got: ConnectError: [Errno -2] Name or service not known\nAn error happened while trying to "
            "locate the files on the Hub, and we cannot find the appropriate snapshot folder.")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    err = one_line_error(["--init_from", "gpt2-medium", "--out_dir", str(tmp_path / "out")], capsys)
    assert "could not fetch gpt2-medium" in err and "Name or service not known" in err


@needs_transformers
@pytest.mark.parametrize("damage,args,message", [
    ("no_config", [], "not a readable Hugging Face config"),
    ("relu", [], "not implemented here (activation_function='relu')"),
    ("no_weights", [], "neither model.safetensors nor pytorch_model.bin"),
    (None, ["--block_size", "200"], "longer than the model's 128 positions"),
    (None, ["--n_layer", "3"], "does not fit"),
])
def test_a_folder_that_is_not_a_usable_gpt2_is_one_line(tiny_gpt2, tmp_path, capsys, damage, args, message):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_gpt2[0], name), folder / name)
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "relu":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    elif damage == "no_weights":
        (folder / "model.safetensors").unlink()
    err = one_line_error(["--init_from", str(folder), "--out_dir", str(tmp_path / "out"), *args], capsys)
    assert message in err


def test_an_unknown_init_from_says_what_it_takes(tmp_path, capsys):
    err = one_line_error(["--init_from", "gpt3", "--out_dir", str(tmp_path / "out")], capsys)
    assert "neither a checkpoint file, a GPT-2 (gpt2, gpt2-medium, gpt2-large, gpt2-xl) nor a folder" in err


@pytest.mark.parametrize("key,value", [("model_type", "gpt_neo"), ("activation_function", "swish"), ("n_inner", 100),
                                       ("layer_norm_epsilon", 1e-6), ("scale_attn_weights", False),
                                       ("scale_attn_by_inverse_layer_idx", True), ("tie_word_embeddings", False)])
def test_every_gpt2_variant_this_model_does_not_implement_is_refused_by_name(key, value):
    from gpt2 import config_from_hf
    hf = {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 128, "vocab_size": 50257,
          "activation_function": "gelu_new"}
    assert config_from_hf(hf, None, 0.0, False).gelu_approximate == "tanh"  # the variant we implement
    with pytest.raises(CheckpointError, match=f"not implemented here \\({key}="):
        config_from_hf({**hf, key: value}, None, 0.0, False)
