"""Writes the decoder (llama, gpt2) reference fixtures the tests compare against.

    python scripts/make_decoder_fixtures.py [--out tests/fixtures/pretrained]

Needs transformers, torch (CPU), tokenizers and gguf, none of which CI
installs: the outputs are committed, and the tests read them. Re-run after
changing the fixtures' shape; the files are deterministic for a given seed
and library versions (recorded in each `reference.json`).

Three tiny random models, each with HF transformers' own outputs:
- `llama_tiny/`: a Hugging Face directory (config.json, model.safetensors,
  tokenizer.json, tokenizer_config.json with a ChatML template), untied head,
  grouped-query attention and Llama 3.1 RoPE scaling, so those paths matter.
- `llama_tiny_gguf/model.gguf`: a tied model written the way llama.cpp's
  converter writes GGUF (Q/K rows permuted; Q8_0 and F32 tensors), with its
  reference computed by transformers' own GGUF loader (`gguf_file=`), which
  un-permutes independently of tfllm.
- `gpt2_tiny/`: a `GPT2LMHeadModel` (Conv1D layout, tanh GELU, biases set
  non-zero so a misplaced one shows).
`reference.npz` holds the token ids, float32 logits and a 32-token greedy
continuation of each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = "../shared/data/tinyshakespeare/input.txt"


def train_tokenizer(vocab_size: int):
    """A byte-level BPE with SmolLM2's pre-tokenizer (single digits, then GPT-2's regex)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with open(_text_path(), encoding="utf-8") as f:
        text = f.read()[:200_000]
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    return tok


def _text_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", TEXT)


def prompt_ids(tok) -> np.ndarray:
    ids = tok.encode("<|im_start|>user\nWhat light through yonder window breaks? 1234<|im_end|>\n")
    return np.array([ids.ids[:24]], np.int64)


def reference(model, ids: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.float().numpy()
        greedy = model.generate(
            torch.tensor(ids), max_new_tokens=32, do_sample=False, eos_token_id=None
        )[0, ids.shape[1] :].numpy()
    return {"ids": ids.astype(np.int32), "logits": logits, "greedy": greedy.astype(np.int32)}


def hf_fixture(out: str, tok) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # visible norms: ones everywhere would hide a misplaced scale
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    target = os.path.join(out, "llama_tiny")
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target, safe_serialization=True)
    tok.save(os.path.join(target, "tokenizer.json"))
    with open(os.path.join(target, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>"}, f, indent=1)
    np.savez(os.path.join(target, "reference.npz"), **reference(model, prompt_ids(tok)))
    _versions(target)


def gguf_fixture(out: str, tok) -> None:
    import gguf
    import torch
    import transformers

    from tfllm.pretrained.gguf_files import permute_rotary

    torch.manual_seed(1)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    state = {k: v.float().numpy() for k, v in model.state_dict().items()}
    target = os.path.join(out, "llama_tiny_gguf")
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    path = os.path.join(target, "model.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tfllm tiny llama fixture")
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(config.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    merges = json.loads(tok.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_chat_template(CHAT_TEMPLATE)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for name, array in state.items():
        if name == "lm_head.weight":
            continue  # tied: llama.cpp writes no output.weight
        if name in names:
            gname = names[name]
        else:
            layer, rest = name.split(".")[2], name.split(".", 3)[3]
            gname = f"blk.{layer}.{per_layer[rest]}"
        if name.endswith("q_proj.weight"):
            array = permute_rotary(array, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            array = permute_rotary(array, config.num_key_value_heads)
        if array.ndim == 2:  # matrices as Q8_0, as a quantized GGUF stores them
            q = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, array.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with tempfile.TemporaryDirectory():
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            target, gguf_file="model.gguf", dtype=torch.float32
        ).eval()
    np.savez(os.path.join(target, "reference.npz"), **reference(hf, prompt_ids(tok)))
    _versions(target)


def gpt2_fixture(out: str, tok) -> None:
    import torch
    import transformers

    torch.manual_seed(2)
    config = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.2, 0.2)
            elif name.endswith("bias"):
                p.uniform_(-0.1, 0.1)  # GPT-2 starts biases at 0; non-zero ones show the map
            if name.endswith("mlp.c_fc.weight"):
                p.normal_(0.0, 0.5)  # pre-activations of order 1, where tanh and exact GELU differ
    target = os.path.join(out, "gpt2_tiny")
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target, safe_serialization=True)
    tok.save(os.path.join(target, "tokenizer.json"))
    np.savez(os.path.join(target, "reference.npz"), **reference(model, prompt_ids(tok)))
    _versions(target)


def _versions(target: str) -> None:
    import gguf  # noqa: F401
    import tokenizers
    import torch
    import transformers

    with open(os.path.join(target, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "made_by": "scripts/make_decoder_fixtures.py",
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "tokenizers": tokenizers.__version__,
            },
            f,
            indent=1,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/pretrained")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = train_tokenizer(320)
    hf_fixture(args.out, tok)
    gguf_fixture(args.out, tok)
    gpt2_fixture(args.out, tok)
    for root, _, files in os.walk(args.out):
        for name in files:
            if "llama" in root or "gpt2" in root:
                print(os.path.join(root, name), os.path.getsize(os.path.join(root, name)))


if __name__ == "__main__":
    main()
