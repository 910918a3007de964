#!/usr/bin/env python3
"""Writes the seed corpora of the reader fuzz targets (run once; the output is committed):
seeds/<format>/ for safetensors, config, tokenizer, gguf, llama2c and baq. Small valid files of each
format, so the fuzzer starts from inputs that get deep into the readers. Standard library only; the
.baq seed is made by the baq binary given as the first argument (build/baq) from the llama2.c seed.

    python3 tests/fuzz/make_reader_seeds.py build/baq
"""
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")
rng = random.Random(0)


def write(fmt, name, data):
    os.makedirs(os.path.join(OUT, fmt), exist_ok=True)
    with open(os.path.join(OUT, fmt, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def floats(n, scale=0.3):
    return [round(rng.gauss(0, scale), 3) for _ in range(n)]


# A tiny Llama: dim 8, ffn 12, 1 layer, 2 heads / 1 kv head, vocab 260, context 8.
DIM, FFN, LAYERS, HEADS, KV, VOCAB, CTX = 8, 12, 1, 2, 1, 260, 8
HD = DIM // HEADS
SHAPES = [("model.embed_tokens.weight", [VOCAB, DIM])]
for l in range(LAYERS):
    p = "model.layers.%d." % l
    SHAPES += [(p + "input_layernorm.weight", [DIM]), (p + "self_attn.q_proj.weight", [DIM, DIM]),
               (p + "self_attn.k_proj.weight", [KV * HD, DIM]), (p + "self_attn.v_proj.weight", [KV * HD, DIM]),
               (p + "self_attn.o_proj.weight", [DIM, DIM]), (p + "post_attention_layernorm.weight", [DIM]),
               (p + "mlp.gate_proj.weight", [FFN, DIM]), (p + "mlp.up_proj.weight", [FFN, DIM]),
               (p + "mlp.down_proj.weight", [DIM, FFN])]
SHAPES.append(("model.norm.weight", [DIM]))


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def safetensors_seed():
    header, data = {}, b""
    for name, shape in SHAPES:
        values = floats(numel(shape))
        raw = struct.pack("<%de" % len(values), *values)  # F16
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    write("safetensors", "tiny_f16.safetensors", struct.pack("<Q", len(text)) + text + data)


def config_seeds():
    base = {"hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    write("config", "llama3.json", json.dumps(dict(base, architectures=["LlamaForCausalLM"], model_type="llama",
        head_dim=8, tie_word_embeddings=True, eos_token_id=[2, 3], rope_scaling={"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16})))
    write("config", "mistral.json", json.dumps(dict(base, architectures=["MistralForCausalLM"], model_type="mistral",
        sliding_window=4)))
    write("config", "qwen2.json", json.dumps(dict(base, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
        use_sliding_window=True, sliding_window=8, max_window_layers=1, tie_word_embeddings=True)))
    write("config", "gemma2.json", json.dumps(dict(base, architectures=["Gemma2ForCausalLM"], model_type="gemma2",
        head_dim=16, hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        query_pre_attn_scalar=16, sliding_window=4)))
    write("config", "phi3.json", json.dumps(dict(base, architectures=["Phi3ForCausalLM"], model_type="phi3",
        num_key_value_heads=4, sliding_window=16, rope_scaling=None)))
    write("config", "opt.json", json.dumps({"architectures": ["OPTForCausalLM"], "model_type": "opt",
        "hidden_size": 32, "ffn_dim": 40, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 300,
        "max_position_embeddings": 64, "do_layer_norm_before": False, "word_embed_proj_dim": 24,
        "activation_function": "relu"}))


def tokenizer_seeds():
    # Byte-level BPE (GPT-2 style) over a few letters, with a pre-tokenizer sequence and an added token.
    alphabet = ["H", "e", "l", "o", "w", "r", "d", "\u0120", "1", "2", "3"]
    vocab = {t: i for i, t in enumerate(alphabet)}
    merges = ["H e", "l l", "He ll", "Hell o", "\u0120 w", "o r"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    write("tokenizer", "byte_level.json", json.dumps({
        "version": "1.0", "added_tokens": [{"id": len(vocab), "content": "<|end|>", "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\p{L}+|\\p{N}|\\s+"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges}}))
    # SentencePiece-style BPE with byte fallback (as Llama ships tokenizer.json).
    pieces = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581", "H", "e", "l", "o", "\u2581H", "ll"]
    write("tokenizer", "sentencepiece.json", json.dumps({
        "version": "1.0", "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "model": {"type": "BPE", "byte_fallback": True, "vocab": {p: i for i, p in enumerate(pieces)},
                  "merges": ["\u2581 H", "l l"]}}))
    # Every other component the reader takes: NFC, Punctuation, Digits, Metaspace, a BOS template,
    # ignore_merges, and a decoder sequence.
    write("tokenizer", "pipeline.json", json.dumps({
        "version": "1.0",
        "added_tokens": [{"id": 1, "content": "<s>", "special": True, "rstrip": True},
                         {"id": 300, "content": "  ", "special": False, "lstrip": True}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Punctuation", "behavior": "Contiguous"}, {"type": "Digits", "individual_digits": True},
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}]},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                   {"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                      {"type": "ByteFallback"}, {"type": "Fuse"},
                                                      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "byte_fallback": True, "ignore_merges": True,
                  "vocab": {p: i for i, p in enumerate(pieces)}, "merges": ["\u2581 H", "l l"]}}))


def gguf_seed():
    out = bytearray(b"GGUF")
    kv = []

    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    def add(key, typ, payload):
        kv.append(s(key) + struct.pack("<I", typ) + payload)

    add("general.architecture", 8, s("llama"))
    for key, v in (("llama.context_length", CTX), ("llama.embedding_length", DIM), ("llama.block_count", LAYERS),
                   ("llama.feed_forward_length", FFN), ("llama.attention.head_count", HEADS),
                   ("llama.attention.head_count_kv", KV)):
        add(key, 4, struct.pack("<I", v))
    add("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))
    add("tokenizer.ggml.model", 8, s("llama"))
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581"]
    add("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(s(t) for t in tokens))
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    gg = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    tensors, data = [], b""
    for name, shape in SHAPES:
        if name not in names:
            l = name.split(".")[2]
            module = ".".join(name.split(".")[3:-1])
            names[name] = "blk.%s.%s.weight" % (l, gg[module])
        raw = struct.pack("<%df" % numel(shape), *floats(numel(shape)))
        tensors.append((names[name], shape, len(data)))
        data += raw + b"\0" * ((32 - len(raw) % 32) % 32)
    out += struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k in kv:
        out += k
    for name, shape, offset in tensors:
        out += s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in reversed(shape))
        out += struct.pack("<IQ", 0, offset)
    out += b"\0" * ((32 - len(out) % 32) % 32)
    write("gguf", "tiny.gguf", bytes(out) + data)


def llama2c_seed():
    header = struct.pack("<7i", DIM, FFN, LAYERS, HEADS, KV, VOCAB, CTX)
    order = ["embed_tokens", "input_layernorm", "q_proj", "k_proj", "v_proj", "o_proj", "post_attention_layernorm",
             "gate_proj", "down_proj", "up_proj", "model.norm"]
    data = b""
    for key in order:
        for name, shape in SHAPES:
            if key in name:
                data += struct.pack("<%df" % numel(shape), *floats(numel(shape)))
    data += b"\0" * (CTX * HD * 4)  # freq_cis tables
    write("llama2c", "tiny.bin", header + data)
    return os.path.join(OUT, "llama2c", "tiny.bin")


def tokenizer_bin(path):
    out = struct.pack("<i", 16)
    for p in ["<unk>", "\n<s>\n", "\n</s>\n"] + ["<0x%02X>" % b for b in range(256)] + [" "]:
        out += struct.pack("<fi", 0.0, len(p.encode())) + p.encode()
    with open(path, "wb") as f:
        f.write(out)


def baq_seed(baq, model):
    with tempfile.TemporaryDirectory() as tmp:
        tok = os.path.join(tmp, "tokenizer.bin")
        tokenizer_bin(tok)
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:
            f.write("abc def ghi " * 50)
        for method, bits in (("gptq", "3"), ("baq", "2.5")):
            out = os.path.join(tmp, "m.baq")
            subprocess.run([baq, "quantize", model, "--tokenizer", tok, "--calib", text, "--nsamples", "2",
                            "--seqlen", "8", "--method", method, "--bits", bits, "--group-size", "4", "--out", out],
                           check=True, stdout=subprocess.DEVNULL)
            with open(out, "rb") as f:
                write("baq", "tiny_%s.baq" % method, f.read())


def main():
    safetensors_seed()
    config_seeds()
    tokenizer_seeds()
    gguf_seed()
    model = llama2c_seed()
    if len(sys.argv) > 1:
        baq_seed(sys.argv[1], model)


if __name__ == "__main__":
    main()
