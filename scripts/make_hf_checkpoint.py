#!/usr/bin/env python3
"""Writes a small random checkpoint in the Hugging Face hub's layout, for the loaders' tests:
config.json (the family's own fields and names), generation_config.json, a byte-level
tokenizer.json, and the weights as model.safetensors or as shards with
model.safetensors.index.json, in the family's tensor names and dtype. Pure Python, no torch.

    scripts/make_hf_checkpoint.py FAMILY OUT_DIR [--seed S] [--dtype F32|F16|BF16] [--shards N]
                                  [--rope-parameters] [--hidden D --layers L --intermediate F]

FAMILY: llama (Llama 3.1 style: GQA, rope_type llama3), mistral (GQA 4:1, sliding window),
qwen2 (q/k/v biases, tied embeddings), phi3 (fused qkv_proj and gate_up_proj, longrope with
the original length at the top level). --rope-parameters writes transformers v5's
rope_parameters instead of rope_theta / rope_scaling. --hidden / --layers / --intermediate make
a larger model of the family (for memory measurements): its matrices are then random bytes
whose exponents are held near 0.05 in magnitude, which pure Python writes at disk speed.
"""
import argparse
import json
import math
import os
import random
import struct

FAMILIES = {
    "llama": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=500000.0, hidden_act="silu", tie_word_embeddings=False, attention_bias=False,
        mlp_bias=False, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=64),
        bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16"),
    "mistral": dict(
        architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=1000000.0, hidden_act="silu", tie_word_embeddings=False, sliding_window=32,
        bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16"),
    "qwen2": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        max_window_layers=2, rms_norm_eps=1e-6, rope_theta=1000000.0, hidden_act="silu", tie_word_embeddings=True,
        use_sliding_window=False, sliding_window=None, rope_scaling=None,
        bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16"),
    "phi3": dict(
        architectures=["Phi3ForCausalLM"], model_type="phi3", hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        original_max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
        tie_word_embeddings=False, sliding_window=262144, attention_bias=False, partial_rotary_factor=1.0,
        rope_scaling=dict(type="longrope", short_factor=None, long_factor=None),
        bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16"),
}


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    m = byte_chars()
    vocab = {m[b]: b for b in range(256)}
    merges = []
    for a, b in [(" ", "t"), ("h", "e"), (" t", "he"), ("i", "n"), (" ", "a"), ("e", "r"), (" ", "s"), ("o", "n")]:
        a2 = "".join(m[ord(c)] for c in a)
        b2 = "".join(m[ord(c)] for c in b)
        merges.append([a2, b2])
        vocab.setdefault(a2 + b2, len(vocab))
    added = [{"id": len(vocab) + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate(["<s>", "</s>"])]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": merges}}


def encode(values, dtype):
    if isinstance(values, (bytes, bytearray)):
        return bytes(values)
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F16":
        return struct.pack("<%de" % len(values), *values)
    # BF16: the top 16 bits of the float32, rounded to nearest even
    out = bytearray()
    for v in values:
        (u,) = struct.unpack("<I", struct.pack("<f", v))
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        out += struct.pack("<H", u & 0xFFFF)
    return bytes(out)


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name, shape, values in tensors:
        blob = encode(values, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", choices=sorted(FAMILIES))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="BF16")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--rope-parameters", action="store_true")
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--intermediate", type=int)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    cfg = dict(FAMILIES[a.family])
    large = a.hidden or a.layers or a.intermediate
    if a.hidden:
        cfg["hidden_size"] = a.hidden
        if "head_dim" in cfg:
            cfg["head_dim"] = a.hidden // cfg["num_attention_heads"]
    if a.layers:
        cfg["num_hidden_layers"] = a.layers
        if "max_window_layers" in cfg:
            cfg["max_window_layers"] = a.layers
    if a.intermediate:
        cfg["intermediate_size"] = a.intermediate
    tok = tokenizer_json()
    cfg["vocab_size"] = len(tok["model"]["vocab"]) + len(tok["added_tokens"]) + 6  # padded, as hub models are
    cfg["bos_token_id"], cfg["eos_token_id"] = tok["added_tokens"][0]["id"], tok["added_tokens"][1]["id"]
    D, H, L, F = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    KVH = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    if a.family == "phi3":
        cfg["rope_scaling"] = {"type": "longrope",
                               "short_factor": [round(1 + 0.05 * i, 4) for i in range(hd // 2)],
                               "long_factor": [round(1 + 0.9 * i, 4) for i in range(hd // 2)]}
    if a.rope_parameters:
        rp = dict(cfg.pop("rope_scaling", None) or {"rope_type": "default"})
        if "type" in rp:
            rp["rope_type"] = rp.pop("type")
        rp["rope_theta"] = cfg.pop("rope_theta")
        cfg["rope_parameters"] = rp
    cfg["transformers_version"] = "4.44.0"

    # The top byte of each little-endian element (sign and high exponent bits) for magnitudes
    # in [2^-6, 2^-3): F32 and BF16 share it; F16's exponent is 5 bits.
    top = {"F32": (4, [0x3C, 0x3D, 0xBC, 0xBD]), "BF16": (2, [0x3C, 0x3D, 0xBC, 0xBD]),
           "F16": (2, [0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB])}

    def mat(rows, cols, std=0.08):
        if not large:
            return [rng.gauss(0, std) for _ in range(rows * cols)]
        size, allowed = top[a.dtype]
        buf = bytearray(rng.randbytes(rows * cols * size))
        table = bytes(allowed[i % len(allowed)] for i in range(256))
        buf[size - 1::size] = bytes(buf[size - 1::size]).translate(table)
        return buf

    def norm(n):
        return [1 + rng.gauss(0, 0.1) for _ in range(n)]

    V = cfg["vocab_size"]
    t = [("model.embed_tokens.weight", [V, D], mat(V, D, 0.5))]
    for i in range(L):
        p = "model.layers.%d." % i
        t.append((p + "input_layernorm.weight", [D], norm(D)))
        if a.family == "phi3":
            t.append((p + "self_attn.qkv_proj.weight", [(H + 2 * KVH) * hd, D], mat((H + 2 * KVH) * hd, D)))
        else:
            t.append((p + "self_attn.q_proj.weight", [H * hd, D], mat(H * hd, D)))
            t.append((p + "self_attn.k_proj.weight", [KVH * hd, D], mat(KVH * hd, D)))
            t.append((p + "self_attn.v_proj.weight", [KVH * hd, D], mat(KVH * hd, D)))
            if a.family == "qwen2":
                t.append((p + "self_attn.q_proj.bias", [H * hd], mat(1, H * hd, 0.2)))
                t.append((p + "self_attn.k_proj.bias", [KVH * hd], mat(1, KVH * hd, 0.2)))
                t.append((p + "self_attn.v_proj.bias", [KVH * hd], mat(1, KVH * hd, 0.2)))
        t.append((p + "self_attn.o_proj.weight", [D, H * hd], mat(D, H * hd)))
        t.append((p + "post_attention_layernorm.weight", [D], norm(D)))
        if a.family == "phi3":
            t.append((p + "mlp.gate_up_proj.weight", [2 * F, D], mat(2 * F, D)))
        else:
            t.append((p + "mlp.gate_proj.weight", [F, D], mat(F, D)))
            t.append((p + "mlp.up_proj.weight", [F, D], mat(F, D)))
        t.append((p + "mlp.down_proj.weight", [D, F], mat(D, F)))
    t.append(("model.norm.weight", [D], norm(D)))
    if not cfg.get("tie_word_embeddings"):
        t.append(("lm_head.weight", [V, D], mat(V, D)))

    os.makedirs(a.out, exist_ok=True)
    if a.shards <= 1:
        write_safetensors(os.path.join(a.out, "model.safetensors"), t, a.dtype)
    else:
        per = math.ceil(len(t) / a.shards)
        weight_map, total = {}, 0
        for s in range(a.shards):
            name = "model-%05d-of-%05d.safetensors" % (s + 1, a.shards)
            part = t[s * per:(s + 1) * per]
            total += write_safetensors(os.path.join(a.out, name), part, a.dtype)
            for n, _, _ in part:
                weight_map[n] = name
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"], "do_sample": False,
                   "transformers_version": "4.44.0"}, f, indent=2)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "model_max_length": cfg["max_position_embeddings"],
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
    print("wrote %s: %s, %d tensors, %s, %d shard(s)" % (a.out, a.family, len(t), a.dtype, max(1, a.shards)))


if __name__ == "__main__":
    main()
