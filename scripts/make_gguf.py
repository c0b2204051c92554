#!/usr/bin/env python3
"""Write random-weight GGUF models for tests and benchmarks (deterministic: fixed seed).

  make_gguf.py gptneox OUT.gguf [--shape tiny|tiny-50k|pythia-1.4b|pythia-6.9b] [--type f16|q8_0|q4_0]
  make_gguf.py gptj OUT.gguf          # a tiny GPT-J file: llama.cpp has no graph for it
  make_gguf.py bert-reranker OUT.gguf # a tiny BERT cross-encoder (rank pooling, one score)
  make_gguf.py bert OUT.gguf --shape minilm   # an embedder shaped like all-MiniLM-L6-v2

Speed does not depend on weight values, so these serve throughput checks; the tiny one
proves the GPT-NeoX path loads and generates through lore's engine.
"""
import argparse

import gguf
import numpy as np

SHAPES = {
    # n_embd, n_layer, n_head, n_ff, n_vocab, n_ctx
    "tiny": (64, 2, 4, 256, 512, 512),
    # A real model's vocabulary on a nearly free network: decoding costs little more
    # than the host's work per token (sampling, streaming), which this shape measures.
    "tiny-50k": (64, 2, 4, 256, 50304, 2048),
    "pythia-1.4b": (2048, 24, 16, 8192, 50304, 2048),
    "pythia-6.9b": (4096, 32, 32, 16384, 50432, 2048),
}


def byte_vocab(n_vocab: int):
    """GPT-2 style byte-level BPE vocabulary: 256 byte tokens, a few merges, fillers, EOT."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    tokens = [chr(c) for c in cs]
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("a", "n")]:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
    eot = len(tokens)
    tokens.append("<|endoftext|>")
    while len(tokens) < n_vocab:
        tokens.append(f"<|filler_{len(tokens)}|>")
    types = [gguf.TokenType.NORMAL] * len(tokens)
    types[eot] = gguf.TokenType.CONTROL
    for i in range(eot + 1, len(tokens)):
        types[i] = gguf.TokenType.UNUSED
    return tokens, types, merges, eot


def add_tokenizer(w: gguf.GGUFWriter, n_vocab: int) -> None:
    tokens, types, merges, eot = byte_vocab(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_add_bos_token(False)


def tensor(w, rng, name, shape, qtype):
    """Add a random tensor; `shape` is numpy order (rows, cols)."""
    if len(shape) == 1 or qtype == "f32":
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
        return
    if qtype == "f16":
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float16))
        return
    gtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[qtype]
    block, type_size = gguf.GGML_QUANT_SIZES[gtype]
    rows, cols = shape
    n_blocks = rows * cols // block
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # Keep each block's f16 scale small and finite so activations stay sane.
    raw[:, 0:2] = np.frombuffer(np.full(n_blocks, 0.002, dtype=np.float16).tobytes(), dtype=np.uint8).reshape(n_blocks, 2)
    w.add_tensor(name, raw.reshape(rows, cols // block * type_size), raw_dtype=gtype)


def gptneox(out: str, shape: str, qtype: str) -> None:
    n_embd, n_layer, n_head, n_ff, n_vocab, n_ctx = SHAPES[shape]
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(out, "gptneox")
    w.add_name(f"random-gptneox-{shape}")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_rope_dimension_count(n_embd // n_head // 4)
    w.add_layer_norm_eps(1e-5)
    w.add_parallel_residual(True)
    add_tokenizer(w, n_vocab)
    tensor(w, rng, "token_embd.weight", (n_vocab, n_embd), qtype)
    tensor(w, rng, "output_norm.weight", (n_embd,), "f32")
    tensor(w, rng, "output_norm.bias", (n_embd,), "f32")
    tensor(w, rng, "output.weight", (n_vocab, n_embd), qtype)
    for i in range(n_layer):
        p = f"blk.{i}."
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(p + norm + ".weight", np.ones(n_embd, dtype=np.float32))
            w.add_tensor(p + norm + ".bias", np.zeros(n_embd, dtype=np.float32))
        tensor(w, rng, p + "attn_qkv.weight", (3 * n_embd, n_embd), qtype)
        tensor(w, rng, p + "attn_qkv.bias", (3 * n_embd,), "f32")
        tensor(w, rng, p + "attn_output.weight", (n_embd, n_embd), qtype)
        tensor(w, rng, p + "attn_output.bias", (n_embd,), "f32")
        tensor(w, rng, p + "ffn_up.weight", (n_ff, n_embd), qtype)
        tensor(w, rng, p + "ffn_up.bias", (n_ff,), "f32")
        tensor(w, rng, p + "ffn_down.weight", (n_embd, n_ff), qtype)
        tensor(w, rng, p + "ffn_down.bias", (n_embd,), "f32")
    finish(w)


def gptj(out: str) -> None:
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(out, "gptj")
    w.add_name("random-gptj-tiny")
    w.add_context_length(512)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_head_count(4)
    add_tokenizer(w, 512)
    tensor(w, rng, "token_embd.weight", (512, 64), "f16")
    finish(w)


def wordpiece_vocab():
    """A small WordPiece vocabulary that spells any ASCII text: word-initial pieces carry
    U+2581 (as llama.cpp's WPM tokenizer expects), continuation pieces are bare."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    types = [gguf.TokenType.CONTROL] * len(tokens)
    chars = [chr(c) for c in range(33, 127)]
    words = "the of and to in is was what who when where which how bee bees honey hive queen worker".split()
    for piece in ["\u2581" + c for c in chars] + chars + ["\u2581" + w for w in words]:
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
    return tokens, types


BERT_SHAPES = {
    # n_embd, n_layer, n_head, n_ff, n_ctx
    "tiny": (32, 2, 2, 64, 512),
    "minilm": (384, 6, 12, 1536, 512),
}


def bert(out: str, shape: str, reranker: bool) -> None:
    """A BERT encoder. As a reranker it has a classification head and rank pooling, the
    shape of bge-reranker GGUFs (llama.cpp scores a (query, document) pair from the first
    token's output); otherwise it is an embedder with mean pooling (all-MiniLM's shape)."""
    n_embd, n_layer, n_head, n_ff, n_ctx = BERT_SHAPES[shape]
    rng = np.random.default_rng(1234)
    tokens, types = wordpiece_vocab()
    n_vocab = 30522 if shape == "minilm" else len(tokens)
    while len(tokens) < n_vocab:
        tokens.append(f"[unused{len(tokens)}]")
        types.append(gguf.TokenType.UNUSED)
    w = gguf.GGUFWriter(out, "bert")
    w.add_name(f"random-bert-{'reranker-' if reranker else ''}{shape}")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_block_count(n_layer)
    w.add_head_count(n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.RANK if reranker else gguf.PoolingType.MEAN)
    w.add_token_type_count(2)
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(3)
    w.add_sep_token_id(3)
    w.add_unk_token_id(1)
    w.add_pad_token_id(0)
    w.add_mask_token_id(4)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    f32 = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)
    w.add_tensor("token_embd.weight", f32(n_vocab, n_embd))
    w.add_tensor("token_types.weight", f32(2, n_embd))
    w.add_tensor("position_embd.weight", f32(n_ctx, n_embd))
    w.add_tensor("token_embd_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("token_embd_norm.bias", np.zeros(n_embd, dtype=np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."
        for name, rows, cols in [("attn_q", n_embd, n_embd), ("attn_k", n_embd, n_embd), ("attn_v", n_embd, n_embd),
                                 ("attn_output", n_embd, n_embd), ("ffn_up", n_ff, n_embd), ("ffn_down", n_embd, n_ff)]:
            w.add_tensor(p + name + ".weight", f32(rows, cols))
            w.add_tensor(p + name + ".bias", f32(rows))
        for norm in ("attn_output_norm", "layer_output_norm"):
            w.add_tensor(p + norm + ".weight", np.ones(n_embd, dtype=np.float32))
            w.add_tensor(p + norm + ".bias", np.zeros(n_embd, dtype=np.float32))
    if reranker:
        w.add_tensor("cls.weight", f32(n_embd, n_embd))
        w.add_tensor("cls.bias", f32(n_embd))
        w.add_tensor("cls.output.weight", f32(1, n_embd))
        w.add_tensor("cls.output.bias", f32(1))
    finish(w)


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", choices=["gptneox", "gptj", "bert", "bert-reranker"])
    ap.add_argument("out")
    ap.add_argument("--shape", default="tiny", choices=sorted(set(SHAPES) | set(BERT_SHAPES)))
    ap.add_argument("--type", default="f16", choices=["f32", "f16", "q8_0", "q4_0"])
    a = ap.parse_args()
    if a.arch == "gptneox":
        gptneox(a.out, a.shape, a.type)
    elif a.arch in ("bert", "bert-reranker"):
        bert(a.out, a.shape, a.arch == "bert-reranker")
    else:
        gptj(a.out)


if __name__ == "__main__":
    main()
