#!/usr/bin/env python3
"""Write random-weight GGUF models for tests and benchmarks (deterministic: fixed seed).

  make_gguf.py gptneox OUT.gguf [--shape tiny|tiny-50k|pythia-1.4b|pythia-6.9b] [--type f16|q8_0|q4_0]
  make_gguf.py gptj OUT.gguf          # a tiny GPT-J file: llama.cpp has no graph for it
  make_gguf.py bert-reranker OUT.gguf # a tiny BERT cross-encoder (rank pooling, one score)
  make_gguf.py bert OUT.gguf --shape minilm   # an embedder shaped like all-MiniLM-L6-v2
  make_gguf.py t5 OUT.gguf            # a tiny encoder-decoder shaped like Flan-T5 (gated GELU)
  make_gguf.py xlmr OUT.gguf          # a tiny multilingual embedder shaped like multilingual-e5 / bge-m3
  make_gguf.py mt5 OUT.gguf           # a tiny multilingual encoder-decoder shaped like mT5
  make_gguf.py lora gptneox OUT.gguf [--shape tiny] [--seed N] [--rank 4] [--alpha A] [--n-embd N]

Speed does not depend on weight values, so these serve throughput checks; the tiny one
proves the GPT-NeoX path loads and generates through lore's engine.

t5: arch "t5", 2 encoder and 2 decoder layers, n_embd 64, 4 heads, f32 weights, relative
position buckets in layer 0, a SentencePiece-unigram ("t5") vocabulary of 246 pieces with
<pad> 0 (also the decoder start token), </s> 1, <unk> 2; every ASCII character has a piece,
so English text tokenizes (anything else becomes <unk>). llama.cpp runs it as llama_encode
on the prompt, then llama_decode from llama_model_decoder_start_token.

xlmr and mt5 are the multilingual ones; both carry general.languages (en, he, ar, ru) and a
unigram vocabulary in which every letter of ASCII, Hebrew (U+05D0-U+05EA), Arabic
(U+0621-U+064A) and Russian Cyrillic has a word-initial and a bare piece, plus whole common
words, so Hebrew, Arabic and Russian text tokenizes into real pieces (Viterbi picks the words).
Both also carry a tokenizer.ggml.precompiled_charsmap: a subset of SentencePiece's nmt_nfkc
(spaces, LRM/RLM, tabs and newlines to a space; fullwidth ASCII, Hebrew and Arabic
presentation forms to plain letters; NFD-decomposed letters such as й, ё, آ recomposed).
xlmr: what convert_hf_to_gguf.py's XLMRobertaModel writes: arch "bert", a "t5" (UGM)
tokenizer with <s> 0, <pad> 1, </s> 2, <unk> 3 and <mask> last, add_bos and add_eos,
token_type_count 1, mean pooling (multilingual-e5's; bge-m3 uses CLS), n_embd 64, 2 layers,
f32 weights, and a position table already cut by the pad offset (context length 512).
mt5: the t5 layout with mT5's vocabulary layout (<pad> 0, </s> 1, <unk> 2, the unused tail
padded with "[PADn]" pieces to a multiple of 128) and an attention width (n_head * d_kv 128)
unequal to n_embd 64, as in mt5-small and flan-t5-small.

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
import struct
import unicodedata

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
    f32 = bert_tensors(w, rng, n_vocab, 2, n_ctx, n_embd, n_layer, n_ff)
    if reranker:
        w.add_tensor("cls.weight", f32(n_embd, n_embd))
        w.add_tensor("cls.bias", f32(n_embd))
        w.add_tensor("cls.output.weight", f32(1, n_embd))
        w.add_tensor("cls.output.bias", f32(1))
    finish(w)


def bert_tensors(w, rng, n_vocab, n_types, n_ctx, n_embd, n_layer, n_ff):
    """The BERT encoder's tensors (post-norm blocks with biases); returns the random-f32 maker
    so a caller can draw further tensors from the same stream."""
    f32 = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)
    w.add_tensor("token_embd.weight", f32(n_vocab, n_embd))
    w.add_tensor("token_types.weight", f32(n_types, n_embd))
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
    return f32


# ISO 639-1 codes of the languages whose alphabets the multilingual vocabulary spells out.
LANGUAGES = ["en", "he", "ar", "ru"]


def script_chars():
    """(characters that start words, combining marks): ASCII, Hebrew letters and punctuation,
    Arabic letters, punctuation and digits, Russian Cyrillic; Hebrew points and Arabic harakat
    only ever follow a letter, so they get bare pieces alone."""
    ascii_chars = [chr(c) for c in range(33, 127)]
    # maqaf, geresh, gershayim; the Yiddish ligatures are what NFKC makes of U+FB1F and kin
    hebrew = [chr(c) for c in range(0x05D0, 0x05EB)] + ["\u05be", "\u05f3", "\u05f4", "\u05f0", "\u05f1", "\u05f2"]
    arabic = ([chr(c) for c in range(0x0621, 0x064B)] + ["\u060c", "\u061b", "\u061f"]  # comma, semicolon, question mark
              + [chr(c) for c in range(0x0660, 0x066A)])  # Arabic-Indic digits
    cyrillic = [chr(c) for c in range(0x0410, 0x0450)] + ["\u0401", "\u0451"]
    marks = ([chr(c) for c in range(0x05B0, 0x05BE)] + ["\u05bf", "\u05c1", "\u05c2", "\u05c4", "\u05c5", "\u05c7"]
             + [chr(c) for c in range(0x064B, 0x0653)])
    return ascii_chars + hebrew + arabic + cyrillic, marks


def multilingual_pieces():
    """Scored pieces (text -> (score, type)) of the multilingual unigram vocabulary, without
    special tokens. A whole word (-4) beats its spelling (-8 and -10 per letter); the Hebrew
    plural endings sit between, so an unknown Hebrew plural still ends in one piece."""
    chars, marks = script_chars()
    pieces = {"\u2581": (-6.0, gguf.TokenType.NORMAL)}
    for c in chars:
        pieces["\u2581" + c] = (-8.0, gguf.TokenType.NORMAL)
    for c in chars + marks:
        pieces[c] = (-10.0, gguf.TokenType.NORMAL)
    for suffix in ("ים", "ות"):
        pieces[suffix] = (-7.0, gguf.TokenType.NORMAL)
    words = ("the of and to in is was what who when where which how it that this for on with as are be by not or "
             "from bee bees honey hive queen worker "
             "באיזה כיוון כותבים בעברית עברית של את על זה לא מה אני הוא היא עם כל יש גם שלום דבורה דבורים דבש כוורת מלכה "
             "في من على إلى أن هذا ما اللغة العربية نحل عسل خلية ملكة "
             "и в не на что как это по русский язык пчела пчёлы мёд улей матка").split()
    for i, word in enumerate(words):
        pieces.setdefault("\u2581" + word, (-4.0 - i * 0.01, gguf.TokenType.NORMAL))
    return pieces


def nmt_nfkc_rules():
    """The part of SentencePiece's nmt_nfkc normalization that touches these scripts: NFKC of
    Unicode spaces, fullwidth ASCII and the Hebrew and Arabic presentation forms (text copied
    out of PDFs carries them), nmt's extra whitespace (tab, newline, LRM/RLM, ZWSP, BOM, U+2581
    itself) to a space, and NFC recomposition of letters that arrive decomposed (macOS NFD
    text: и + U+0306 is й). Fullwidth tilde stays, as in nmt_nfkc."""
    rules = {}
    for cp in ([0x00A0, 0x202F, 0x205F, 0x3000] + list(range(0x2000, 0x200B)) + list(range(0xFF01, 0xFF5E))
               + list(range(0xFB1D, 0xFB50)) + list(range(0xFE70, 0xFEFD))):
        c = chr(cp)
        if (n := unicodedata.normalize("NFKC", c)) != c:
            rules[c] = n
    for c in "\t\n\x0c\r\u1680\u200b\u200e\u200f\u2028\u2029\u2581\ufeff\ufffd":
        rules[c] = " "
    for c in script_chars()[0]:
        if (d := unicodedata.normalize("NFD", c)) != c:
            rules[d] = c
    return rules


def precompiled_charsmap(rules) -> bytes:
    """SentencePiece's precompiled charsmap, which llama.cpp's UGM tokenizer reads: a uint32
    byte length, a Darts-clone double array over the UTF-8 keys, then NUL-terminated
    replacements. A unit packs label (bits 0-7), has-value (bit 8) and offset (bits 10-30); the
    children of the node at i sit at i ^ offset ^ byte and its value unit (bit 31 set, the
    replacement's position) at i ^ offset. Each node gets its own base i ^ offset, or a lookup
    from one node could land on a child of another with the same label, and the array is
    padded to whole 256-unit blocks, since llama.cpp XORs in any input byte before it checks
    the label and throws on an index past the end."""
    pool, at = bytearray(), {}
    for dst in sorted(set(rules.values()), key=lambda t: [ord(c) for c in t]):
        at[dst] = len(pool)
        pool += dst.encode("utf-8") + b"\0"
    trie = {}
    for src in sorted(rules, key=lambda k: k.encode("utf-8")):
        node = trie
        for b in src.encode("utf-8"):
            node = node.setdefault(b, {})
        node[-1] = at[rules[src]]
    units, bases = {0: 0}, set()
    stack = [(trie, 0)]
    while stack:
        node, i = stack.pop()
        labels = sorted(k for k in node if k >= 0)
        slots = lambda o: [i ^ o ^ c for c in labels] + ([i ^ o] if -1 in node else [])
        o = 1
        while (i ^ o) in bases or any(t in units for t in slots(o)):
            o += 1
        assert o < 1 << 21
        bases.add(i ^ o)
        units[i] |= o << 10 | (-1 in node) << 8
        if -1 in node:
            units[i ^ o] = 1 << 31 | node[-1]
        for c in labels:
            units[i ^ o ^ c] = c
            stack.append((node[c], i ^ o ^ c))
    n_units = (max(units) // 256 + 1) * 256
    array = struct.pack(f"<{n_units}I", *(units.get(i, 0) for i in range(n_units)))
    return struct.pack("<I", len(array)) + array + bytes(pool)


XLMR_SHAPES = {
    # n_embd, n_layer, n_head, n_ff, n_ctx
    "tiny": (64, 2, 4, 256, 512),
}


def add_unigram_tokenizer(w: gguf.GGUFWriter, tokens, scores, types) -> None:
    """A SentencePiece-unigram vocabulary as llama.cpp's converter writes one ("t5", UGM)."""
    w.add_tokenizer_model("t5")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_add_space_prefix(True)
    w.add_remove_extra_whitespaces(True)


def xlmr(out: str, shape: str) -> None:
    """An embedder as convert_hf_to_gguf.py writes XLMRobertaModel (multilingual-e5, bge-m3):
    arch "bert" with the SentencePiece vocabulary realigned to fairseq's ids (<s> 0, <pad> 1,
    </s> 2, <unk> 3), one token type, and RobertaProcessing's specials (<s> A </s>: add_bos,
    add_eos, add_sep). XLM-R numbers positions from pad_token_id + 1 = 2; the converter drops
    the first 2 rows of the position table (514 -> 512 = context length) so that llama.cpp's
    positions 0.. index it directly; this one is written at its cut size. <mask> is the last
    id, a control token, as the converter writes it from tokenizer.json (reading
    sentencepiece.bpe.model it leaves an unused "[PADn]" placeholder at that id instead)."""
    n_embd, n_layer, n_head, n_ff, n_ctx = XLMR_SHAPES[shape]
    rng = np.random.default_rng(1234)
    pieces = multilingual_pieces()
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + list(pieces) + ["<mask>"]
    scores = [0.0] * 4 + [s for s, _ in pieces.values()] + [0.0]
    C = gguf.TokenType.CONTROL
    types = [C, C, C, gguf.TokenType.UNKNOWN] + [t for _, t in pieces.values()] + [C]
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(out, "bert")
    w.add_name(f"random-xlmr-{shape}")
    w.add_languages(LANGUAGES)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_block_count(n_layer)
    w.add_layer_norm_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    add_unigram_tokenizer(w, tokens, scores, types)
    w.add_token_type_count(1)
    w.add_precompiled_charsmap(precompiled_charsmap(nmt_nfkc_rules()))
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_unk_token_id(3)
    w.add_sep_token_id(2)
    w.add_pad_token_id(1)
    w.add_mask_token_id(n_vocab - 1)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    w.add_add_sep_token(True)
    bert_tensors(w, rng, n_vocab, 1, n_ctx, n_embd, n_layer, n_ff)
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
    n_embd, n_layer, n_head, n_ff, n_bkts, n_ctx = T5_SHAPES[shape]
    w = gguf.GGUFWriter(out, "t5")
    w.add_name(f"random-t5-{shape}")
    encoder_decoder(w, (n_embd, n_layer, n_head, n_embd // n_head, n_ff, n_bkts, n_ctx), *unigram_vocab())


MT5_SHAPES = {
    # n_embd, n_layer, n_head, d_kv, n_ff, n_rel_buckets, n_ctx
    "tiny": (64, 2, 4, 32, 128, 32, 512),
}


def mt5(out: str, shape: str) -> None:
    """mT5 as convert_hf_to_gguf.py writes it (the T5Model class): arch "t5", spiece.model's
    ids (<pad> 0, </s> 1, <unk> 2) and config vocab_size beyond the pieces (mT5: 250112 for
    250100) filled with unused "[PADn]" at score -10000."""
    pieces = multilingual_pieces()
    tokens = ["<pad>", "</s>", "<unk>"] + list(pieces)
    scores = [0.0, 0.0, 0.0] + [s for s, _ in pieces.values()]
    types = [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.UNKNOWN] + [t for _, t in pieces.values()]
    while len(tokens) % 128:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-10000.0)
        types.append(gguf.TokenType.UNUSED)
    w = gguf.GGUFWriter(out, "t5")
    w.add_name(f"random-mt5-{shape}")
    w.add_languages(LANGUAGES)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    encoder_decoder(w, MT5_SHAPES[shape], tokens, scores, types, precompiled_charsmap(nmt_nfkc_rules()))


def encoder_decoder(w, dims, tokens, scores, types, charsmap=None) -> None:
    """An encoder-decoder with Flan-T5's layout: RMS norms without bias, no attention scaling
    (llama.cpp's T5 graph uses kq_scale 1), relative position bias tables only in layer 0 of
    each stack (later layers reuse it), gated-GELU FFNs (ffn_gate present) and an untied
    output head. Weights are N(0, 1/fan_in) so each block moves the residual stream as much
    as the embedding does, and the decoder's output depends on the encoded prompt."""
    n_embd, n_layer, n_head, d_kv, n_ff, n_bkts, n_ctx = dims
    n_attn = n_head * d_kv
    rng = np.random.default_rng(1234)
    n_vocab = len(tokens)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_block_count(n_layer)
    w.add_decoder_block_count(n_layer)
    w.add_head_count(n_head)
    w.add_key_length(d_kv)
    w.add_value_length(d_kv)
    w.add_layer_norm_eps(1e-6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_relative_attn_buckets_count(n_bkts)
    w.add_decoder_start_token_id(0)
    add_unigram_tokenizer(w, tokens, scores, types)
    # Without tokenizer.ggml.precompiled_charsmap llama.cpp's UGM tokenizer does no
    # normalization; a present one must hold a valid XCDA blob.
    if charsmap:
        w.add_precompiled_charsmap(charsmap)
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
                for proj in ("q", "k", "v"):
                    w.add_tensor(f"{p}{attn}_{proj}.weight", dense(n_attn, n_embd))
                w.add_tensor(f"{p}{attn}_o.weight", dense(n_embd, n_attn))
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
    ap.add_argument("arch", choices=["gptneox", "gptj", "bert", "bert-reranker", "t5", "xlmr", "mt5", "lora"])
    ap.add_argument("out", nargs="+", metavar="OUT", help="OUT.gguf; for lora: BASE_ARCH OUT.gguf")
    ap.add_argument("--shape", default="tiny", choices=sorted(set(SHAPES) | set(BERT_SHAPES) | set(T5_SHAPES) | set(XLMR_SHAPES) | set(MT5_SHAPES)))
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
    elif a.arch in ("xlmr", "mt5"):
        shapes, write = (XLMR_SHAPES, xlmr) if a.arch == "xlmr" else (MT5_SHAPES, mt5)
        if a.shape not in shapes:
            ap.error(f"{a.arch}: no shape {a.shape} ({sorted(shapes)})")
        write(a.out[0], a.shape)
    else:
        gptj(a.out[0])


if __name__ == "__main__":
    main()
