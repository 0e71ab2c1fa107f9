"""GSM8K's calculator: hand-worked expressions, refusals that never crash, and generation on the KV
cache with forced tokens, checked against the model run on the forced text."""

import pytest
import torch

from calculator import Calculator, calculate, open_annotation
from data import Vocab
from model import GPT, GPTConfig


@pytest.mark.parametrize("expr,result", [
    ("2*3", "6"), ("48/2", "24"), ("10/4", "2.5"), ("1/3", "0.3333"), ("2/3", "0.6667"),
    ("1,200*2", "2400"), ("1,000,000/1,000", "1000"), ("4*1.50", "6"), (".5*10", "5"), ("20/5000", "0.004"),
    ("12.", "12"), ("-3+5", "2"), ("3-5", "-2"), ("2*-3", "-6"), ("+30+46", "76"), ("2*(3+4)", "14"),
    ("((2))", "2"), ("(" * 45 + "1" + ")" * 45, "1"), (" 7 - 2 * 3 ", "1"), ("8/4/2", "1"), ("10-4-3", "3"),
])
def test_expressions_as_gsm8k_writes_them(expr, result):
    assert calculate(expr) == result


@pytest.mark.parametrize("expr", [
    "__import__('os')", "__import__('os').system('ls')", "2**1000", "9**9**9", "10**100", "1e5",
    "99999999*99999999", "1" + "0" * 13, "1/0", "5/(2-2)", "(2+3", "2+3)", ")(", "2 3", "2(3)",
    "", " ", "+", "3*", "x+1", "12,34", "1/3 = 1", "(" * 60 + "1" + ")" * 60, "2//3", "5%2",
])
def test_refused_without_a_crash(expr):
    assert calculate(expr) is None


def test_open_annotation_is_the_expression_waiting_for_its_result():
    assert open_annotation("So she sold 48/2 = <<48/2=") == "48/2"
    assert open_annotation("<<2*3=6>> and 4=") is None          # closed: '=' is prose
    assert open_annotation("she has 4=") is None
    assert open_annotation("<<2*3") is None


def test_the_hook_writes_the_result_and_closing_brackets_after_the_equals_sign():
    vocab = Vocab(None)
    hook = Calculator(vocab)
    text_tokens = vocab.encode("She has 3*4=<<3*4=")
    forced = [hook(0, t) for t in text_tokens]
    assert forced[:-1] == [[]] * (len(text_tokens) - 1)
    assert vocab.decode(forced[-1]) == "12>>"
    assert [hook(0, t) for t in forced[-1]] == [[], []]  # its own tokens start nothing
    for bad in ["<<2**=", "<<(=", "<<1/0=", "<<import os="]:  # left to the model
        assert [hook(1, t) for t in vocab.encode(bad)][-1] == []


def test_generate_emits_forced_tokens_and_continues_as_the_model_would_on_that_text():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]  # different lengths: the cache holds left padding
    plain = model.generate(prompts, 12, temperature=0)

    emitted = {0: 0, 1: 0}

    def force_after_two(row, token):  # row 0 must emit 41, 42 after its second token
        emitted[row] += 1
        return [41, 42] if row == 0 and emitted[row] == 2 else []

    forced = model.generate(prompts, 12, temperature=0, forced=force_after_two)
    assert forced[1] == plain[1]
    assert forced[0][:4] == plain[0][:2] + [41, 42]
    # After the forced tokens the row goes on as the model does from that text, run afresh.
    assert forced[0][4:] == model.generate([prompts[0] + forced[0][:4]], 8, temperature=0)[0]
    # generate decodes rows_per_batch() prompts at a time: the hook still sees each row's own index
    emitted.update({0: 0, 1: 0})
    model.rows_per_batch = lambda: 1
    assert model.generate(prompts, 12, temperature=0, forced=force_after_two) == forced
