#!/usr/bin/env python3
"""Write random-weight GGUF models for tests and benchmarks (deterministic: fixed seed).

  make_gguf.py gptneox OUT.gguf [--shape tiny|tiny-50k|pythia-1.4b|pythia-6.9b] [--type f16|q8_0|q4_0]
  make_gguf.py gptj OUT.gguf          # a tiny GPT-J file: llama.cpp has no graph for it
  make_gguf.py bert-reranker OUT.gguf # a tiny BERT cross-encoder (rank pooling, one score)
  make_gguf.py bert OUT.gguf --shape minilm   # an embedder shaped like all-MiniLM-L6-v2
  make_gguf.py t5 OUT.gguf            # a tiny encoder-decoder shaped like Flan-T5 (gated GELU)
  make_gguf.py lora gptneox OUT.gguf [--shape tiny] [--seed N] [--rank 4] [--alpha A] [--n-embd N]

Speed does not depend on weight values, so these serve throughput checks; the tiny one
proves the GPT-NeoX path loads and generates through lore's engine.

t5: arch "t5", 2 encoder and 2 decoder layers, n_embd 64, 4 heads, f32 weights, relative
position buckets in layer 0, a SentencePiece-unigram ("t5") vocabulary of 246 pieces with
<pad> 0 (also the decoder start token), </s> 1, <unk> 2; every ASCII character has a piece,
so English text tokenizes (anything else becomes <unk>). llama.cpp runs it as llama_encode
on the prompt, then llama_decode from llama_model_decoder_start_token.

lora: a random LoRA adapter (general.type "adapter", adapter.type "lora") for the model
`make_gguf.py BASE_ARCH ... --shape SHAPE` writes; it patches attn_qkv, attn_output, ffn_up
and ffn_down of every layer (bert: attn_q/k/v, attn_output, ffn_up, ffn_down) strongly
enough that the tiny model's greedy output changes. --seed N (default 1) gives a different
adapter; --alpha defaults to --rank, so a scale of 1.0 applies B*A as written.
Adapters llama_adapter_lora_init must refuse, for tests:
  make_gguf.py lora gptneox bad-shape.gguf --n-embd 128   # same tensor names, 128 wide: "incorrect shape"
  make_gguf.py lora bert bad-arch.gguf                    # general.architecture "bert": "arch mismatch"
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


T5_SHAPES = {
    # n_embd, n_layer (encoder and decoder each), n_head, n_ff, n_rel_buckets, n_ctx
    "tiny": (64, 2, 4, 128, 32, 512),
}


def unigram_vocab():
    """A SentencePiece-unigram vocabulary in T5's layout: <pad> 0, </s> 1, <unk> 2 (the ids
    llama.cpp assumes for a "t5" tokenizer), then pieces. Every printable ASCII character
    has a word-initial piece (U+2581 prefix) and a bare one, so the Viterbi search always
    finds a path; whole words score higher than their spelling, as in a trained model."""
    pieces = {"<pad>": (0.0, gguf.TokenType.CONTROL), "</s>": (0.0, gguf.TokenType.CONTROL),
              "<unk>": (0.0, gguf.TokenType.UNKNOWN), "\u2581": (-6.0, gguf.TokenType.NORMAL)}
    chars = [chr(c) for c in range(33, 127)]
    for c in chars:
        pieces["\u2581" + c] = (-8.0, gguf.TokenType.NORMAL)
    for c in chars + ["\n", "\t"]:
        pieces[c] = (-10.0, gguf.TokenType.NORMAL)
    words = ("the of and to in is was what who when where which how it that this for on with as are be by "
             "not or from at his her they you we an have has had translate English German French summarize "
             "question answer context yes no bee bees honey hive queen worker").split()
    for i, word in enumerate(words):
        # setdefault: a word already present as a character piece keeps its id; llama.cpp
        # asserts that no two ids share a text.
        pieces.setdefault("\u2581" + word, (-4.0 - i * 0.01, gguf.TokenType.NORMAL))
    tokens = list(pieces)
    return tokens, [pieces[t][0] for t in tokens], [pieces[t][1] for t in tokens]


def t5(out: str, shape: str) -> None:
    """An encoder-decoder with Flan-T5's layout: RMS norms without bias, no attention scaling
    (llama.cpp's T5 graph uses kq_scale 1), relative position bias tables only in layer 0 of
    each stack (later layers reuse it), gated-GELU FFNs (ffn_gate present) and an untied
    output head. Weights are N(0, 1/fan_in) so each block moves the residual stream as much
    as the embedding does, and the decoder's output depends on the encoded prompt."""
    n_embd, n_layer, n_head, n_ff, n_bkts, n_ctx = T5_SHAPES[shape]
    rng = np.random.default_rng(1234)
    tokens, scores, types = unigram_vocab()
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(out, "t5")
    w.add_name(f"random-t5-{shape}")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_block_count(n_layer)
    w.add_decoder_block_count(n_layer)
    w.add_head_count(n_head)
    w.add_key_length(n_embd // n_head)
    w.add_value_length(n_embd // n_head)
    w.add_layer_norm_eps(1e-6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_relative_attn_buckets_count(n_bkts)
    w.add_decoder_start_token_id(0)
    w.add_tokenizer_model("t5")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_add_space_prefix(True)
    w.add_remove_extra_whitespaces(True)
    # No tokenizer.ggml.precompiled_charsmap: llama.cpp's UGM tokenizer treats an absent map
    # as "no normalization"; a present one must hold a valid XCDA blob.
    w.add_eos_token_id(1)
    w.add_unk_token_id(2)
    w.add_pad_token_id(0)
    w.add_add_bos_token(False)
    w.add_add_eos_token(True)

    def dense(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def ones():
        return np.ones(n_embd, dtype=np.float32)

    w.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, n_embd)).astype(np.float32))
    w.add_tensor("output.weight", dense(n_vocab, n_embd))
    w.add_tensor("enc.output_norm.weight", ones())
    w.add_tensor("dec.output_norm.weight", ones())
    for stack in ("enc", "dec"):
        for i in range(n_layer):
            p = f"{stack}.blk.{i}."
            w.add_tensor(p + "attn_norm.weight", ones())
            if i == 0:
                # Required in layer 0 (the graph indexes it unchecked; other layers fall back to
                # it). ggml {n_head, n_buckets}: one row of per-head biases per bucket.
                w.add_tensor(p + "attn_rel_b.weight", (rng.standard_normal((n_bkts, n_head)) * 0.5).astype(np.float32))
            for attn in ["attn"] + (["cross_attn"] if stack == "dec" else []):
                if attn == "cross_attn":
                    w.add_tensor(p + "cross_attn_norm.weight", ones())
                for proj in ("q", "k", "v", "o"):
                    w.add_tensor(f"{p}{attn}_{proj}.weight", dense(n_embd, n_embd))
            w.add_tensor(p + "ffn_norm.weight", ones())
            w.add_tensor(p + "ffn_gate.weight", dense(n_ff, n_embd))
            w.add_tensor(p + "ffn_up.weight", dense(n_ff, n_embd))
            w.add_tensor(p + "ffn_down.weight", dense(n_embd, n_ff))
    finish(w)


def lora_targets(base_arch: str, shape: str, n_embd_override):
    """The base tensors an adapter patches, as (name, rows, cols) in numpy order (rows = the
    layer's outputs); a width override keeps the names and changes the shapes."""
    if base_arch == "gptneox":
        n_embd, n_layer, _, n_ff, _, _ = SHAPES[shape]
        per_layer = lambda e: [("attn_qkv", 3 * e, e), ("attn_output", e, e), ("ffn_up", n_ff, e), ("ffn_down", e, n_ff)]
    else:
        n_embd, n_layer, _, n_ff, _ = BERT_SHAPES[shape]
        per_layer = lambda e: [("attn_q", e, e), ("attn_k", e, e), ("attn_v", e, e), ("attn_output", e, e),
                               ("ffn_up", n_ff, e), ("ffn_down", e, n_ff)]
    n_embd = n_embd_override or n_embd
    return [(f"blk.{i}.{name}.weight", rows, cols) for i in range(n_layer) for name, rows, cols in per_layer(n_embd)]


# Target std of the product B*A (at alpha == rank): twice the base weights' 0.02, so the
# adapter visibly changes what the tiny model generates rather than nudging a logit.
LORA_DELTA_STD = 0.04


def lora(out: str, base_arch: str, shape: str, seed: int, rank: int, alpha, n_embd) -> None:
    """A LoRA adapter as llama_adapter_lora_init checks it: per base tensor W (ggml ne
    [n_in, n_out]) a pair W.lora_a (ne [n_in, rank]) and W.lora_b (ne [rank, n_out]), i.e.
    numpy (rank, cols) and (rows, rank); llama.cpp adds scale * alpha/rank * B(A x)."""
    alpha = float(rank if alpha is None else alpha)
    rng = np.random.default_rng(seed)
    # Each entry of B*A sums `rank` products of two N(0, s^2) draws: std rank**0.5 * s**2.
    s = np.sqrt(LORA_DELTA_STD / np.sqrt(rank))
    w = gguf.GGUFWriter(out, base_arch)
    w.add_type("adapter")
    w.add_name(f"random-{base_arch}-{shape}-lora-r{rank}-seed{seed}" + (f"-embd{n_embd}" if n_embd else ""))
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, rows, cols in lora_targets(base_arch, shape, n_embd):
        w.add_tensor(name + ".lora_a", (rng.standard_normal((rank, cols)) * s).astype(np.float32))
        w.add_tensor(name + ".lora_b", (rng.standard_normal((rows, rank)) * s).astype(np.float32))
    finish(w)


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", choices=["gptneox", "gptj", "bert", "bert-reranker", "t5", "lora"])
    ap.add_argument("out", nargs="+", metavar="OUT", help="OUT.gguf; for lora: BASE_ARCH OUT.gguf")
    ap.add_argument("--shape", default="tiny", choices=sorted(set(SHAPES) | set(BERT_SHAPES) | set(T5_SHAPES)))
    ap.add_argument("--type", default="f16", choices=["f32", "f16", "q8_0", "q4_0"])
    ap.add_argument("--seed", type=int, default=1, help="lora: which random adapter")
    ap.add_argument("--rank", type=int, default=4, help="lora: rank of A and B")
    ap.add_argument("--alpha", type=float, help="lora: adapter.lora.alpha (default: the rank)")
    ap.add_argument("--n-embd", type=int, help="lora: write it for a base this wide instead (a mismatch)")
    a = ap.parse_args()
    if len(a.out) != (2 if a.arch == "lora" else 1):
        ap.error("lora takes BASE_ARCH OUT.gguf; the others take OUT.gguf")
    if a.arch == "lora":
        base_arch, out = a.out
        shapes = {"gptneox": SHAPES, "bert": BERT_SHAPES}
        if base_arch not in shapes or a.shape not in shapes[base_arch]:
            ap.error(f"lora: no {base_arch} model of shape {a.shape} (gptneox: {sorted(SHAPES)}, bert: {sorted(BERT_SHAPES)})")
        lora(out, base_arch, a.shape, a.seed, a.rank, a.alpha, a.n_embd)
    elif a.arch == "gptneox":
        gptneox(a.out[0], a.shape, a.type)
    elif a.arch in ("bert", "bert-reranker"):
        bert(a.out[0], a.shape, a.arch == "bert-reranker")
    elif a.arch == "t5":
        if a.shape not in T5_SHAPES:
            ap.error(f"t5: no shape {a.shape} ({sorted(T5_SHAPES)})")
        t5(a.out[0], a.shape)
    else:
        gptj(a.out[0])


if __name__ == "__main__":
    main()
