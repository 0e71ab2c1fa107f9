"""GSM8K's calculator: where the model writes `<<48/2=`, the calculator writes `24>>`.

GSM8K's solutions carry calculator annotations, `... 48/2 = <<48/2=24>>24 clips`, and GSM8K is
usually evaluated with a calculator in the loop (Cobbe et al. 2021): once the model has written
`<<expr=`, the result of expr and `>>` are forced and the model goes on. The expression is parsed
here, never handed to Python's eval: numbers (decimals, and thousands commas as in 1,200), + - * /,
parentheses and a sign, in exact rational arithmetic. Anything else, a division by zero, an
unbalanced parenthesis or a result too large is refused (None), and the model writes the result
itself, as it does without a calculator.
"""

import re
from fractions import Fraction

MAX_CHARS = 100           # GSM8K's longest annotated expression has 30; bounds the parser's recursion
MAX_MAGNITUDE = 10 ** 12  # GSM8K's largest annotated result is 2.9e9; bounds every intermediate number
DECIMALS = 4              # GSM8K's annotations write at most 3 decimal places

# One token: a number (1,200.5 with thousands commas, 12, 12.5, 12., .5) or an operator.
TOKEN = re.compile(r"\s*(?:(\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+\.?\d*|\.\d+)|([-+*/()]))")


class Refused(ArithmeticError):
    """The calculator does not compute this expression."""


def tokenize(expr: str) -> list[Fraction | str]:
    tokens, pos, expr = [], 0, expr.rstrip()
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None:
            raise Refused(f"unexpected {expr[pos:].lstrip()[:1]!r}")
        number, operator = match.groups()
        tokens.append(Fraction(number.replace(",", "")) if number else operator)
        pos = match.end()
    return tokens


def bounded(x: Fraction) -> Fraction:
    if abs(x) > MAX_MAGNITUDE or x.denominator > MAX_MAGNITUDE:
        raise Refused("too large")
    return x


# Recursive descent, one function per rule; each takes the tokens and a position and returns the
# value and the position after it.
#   sum     := product (("+" | "-") product)*
#   product := factor (("*" | "/") factor)*
#   factor  := ("-" | "+") factor | "(" sum ")" | number      (GSM8K writes a few '<<+30+46=')

def parse_sum(tokens: list, i: int) -> tuple[Fraction, int]:
    value, i = parse_product(tokens, i)
    while i < len(tokens) and tokens[i] in ("+", "-"):
        right, j = parse_product(tokens, i + 1)
        value, i = bounded(value + right if tokens[i] == "+" else value - right), j
    return value, i


def parse_product(tokens: list, i: int) -> tuple[Fraction, int]:
    value, i = parse_factor(tokens, i)
    while i < len(tokens) and tokens[i] in ("*", "/"):
        right, j = parse_factor(tokens, i + 1)
        if tokens[i] == "/" and right == 0:
            raise Refused("division by zero")
        value, i = bounded(value * right if tokens[i] == "*" else value / right), j
    return value, i


def parse_factor(tokens: list, i: int) -> tuple[Fraction, int]:
    if i == len(tokens):
        raise Refused("the expression ends early")
    token = tokens[i]
    if token in ("-", "+"):
        value, i = parse_factor(tokens, i + 1)
        return (-value if token == "-" else value), i
    if token == "(":
        value, i = parse_sum(tokens, i + 1)
        if i == len(tokens) or tokens[i] != ")":
            raise Refused("unbalanced parentheses")
        return value, i + 1
    if isinstance(token, Fraction):
        return bounded(token), i + 1
    raise Refused(f"unexpected {token!r}")


def as_written(x: Fraction) -> str:
    """A whole number as an integer, anything else rounded to DECIMALS places: 24, 2.5, 0.3333."""
    x = round(x, DECIMALS)
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.{DECIMALS}f}".rstrip("0")


def calculate(expr: str) -> str | None:
    """The result of an annotation's expression as the annotation writes it ('48/2' -> '24'), or
    None where the calculator refuses it."""
    if len(expr) > MAX_CHARS:
        return None
    try:
        tokens = tokenize(expr)
        value, end = parse_sum(tokens, 0)
        if end != len(tokens):  # something left over: '2)', '2 3'
            raise Refused("unbalanced parentheses or a missing operator")
    except Refused:
        return None
    return as_written(value)


def open_annotation(text: str) -> str | None:
    """expr when text ends in an annotation waiting for its result, '... <<expr=', else None."""
    start = text.rfind("<<")
    if start < 0 or not text.endswith("=") or ">>" in text[start:]:
        return None
    return text[start + 2:-1]


class Calculator:
    """model.generate's `forced` hook for one call: keeps each row's text and, when a row has just
    written `<<expr=`, returns the tokens of the result and `>>` for it to emit next; nothing where
    the calculator refuses (or the vocabulary cannot spell the result), so the model goes on."""

    def __init__(self, vocab):
        self.vocab = vocab   # data.Vocab: encode(text) -> ids, decode(ids) -> text
        self.texts: dict[int, str] = {}

    def __call__(self, row: int, token: int) -> list[int]:
        text = self.texts[row] = self.texts.get(row, "") + self.vocab.decode([token])
        expr = open_annotation(text)
        result = None if expr is None else calculate(expr)
        if result is None:
            return []
        try:
            return self.vocab.encode(result + ">>")
        except ValueError:  # a compact vocabulary without these tokens (data.DataError)
            return []
