"""Tests run offline: use the repository's neighbouring GPT-2 BPE cache when there is one."""

import os

_CACHE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tiktoken_cache")
if "TIKTOKEN_CACHE_DIR" not in os.environ and os.path.isdir(_CACHE):
    os.environ["TIKTOKEN_CACHE_DIR"] = os.path.abspath(_CACHE)
