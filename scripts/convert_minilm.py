#!/usr/bin/env python3
"""Convert a sentence-transformers BERT checkpoint (safetensors + tokenizer.json) to a GGUF
that llama.cpp's BERT loader accepts, without torch.

usage: convert_minilm.py MODEL_DIR OUT.gguf
"""
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file


def main(model_dir: Path, out: Path) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    n_layers = cfg["num_hidden_layers"]

    w = gguf.GGUFWriter(str(out), "bert")
    w.add_name(model_dir.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(n_layers)
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_token_type_count(cfg.get("type_vocab_size", 2))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    # llama.cpp's WPM tokenizer wants word-initial pieces marked with U+2581 and
    # continuation pieces ("##x") bare; special tokens stay as they are.
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in tok.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for piece, idx in vocab:
        assert idx == len(tokens), "vocab ids must be dense"
        if piece in special or (piece.startswith("[") and piece.endswith("]")):
            tokens.append(piece)
            types.append(gguf.TokenType.CONTROL if piece in special else gguf.TokenType.USER_DEFINED)
        elif piece.startswith("##"):
            tokens.append(piece[2:])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append("\u2581" + piece)
            types.append(gguf.TokenType.NORMAL)
    ids = tok["model"]["vocab"]
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_bos_token_id(ids["[CLS]"])
    w.add_eos_token_id(ids["[SEP]"])
    w.add_sep_token_id(ids["[SEP]"])
    w.add_unk_token_id(ids["[UNK]"])
    w.add_pad_token_id(ids["[PAD]"])
    w.add_mask_token_id(ids["[MASK]"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    for name, data in load_file(str(model_dir / "model.safetensors")).items():
        if name.endswith("position_ids") or name.startswith("pooler.") or ".pooler." in name:
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"convert_minilm: no GGUF name for tensor {name!r}")
        # Norms, biases and the token-type embeddings stay F32 (llama.cpp adds them to F32
        # activations directly); the other matrices go F16.
        f16 = data.ndim == 2 and new != "token_types.weight"
        data = data.astype(np.float16 if f16 else np.float32)
        w.add_tensor(new, data)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
