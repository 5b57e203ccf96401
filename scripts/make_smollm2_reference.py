"""Writes transformers' outputs for the real SmolLM2-135M-Instruct GGUF, for tests and docs.

    ../shared/tools/fetch-pretrained            # once: the weights (DESIGN.md §6)
    python scripts/make_smollm2_reference.py [--pretrained DIR]

Needs transformers, torch (CPU), accelerate and gguf (not tfllm dependencies).
transformers loads the same GGUF file (`gguf_file=`, its own dequantizer and
Q/K un-permute) and its own tokenizer conversion; the outputs go to
`tests/fixtures/pretrained/smollm2_reference.npz` (small: last-position
logits only), which the `pretrained`-marked tests compare tfllm against
without needing transformers.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "ROMEO:\nBut, soft! what light through yonder window breaks? It is the east, and",
]
GREEDY_TOKENS = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
    parser.add_argument("--pretrained", default=default)
    parser.add_argument("--out", default="tests/fixtures/pretrained/smollm2_reference.npz")
    args = parser.parse_args()

    import torch
    import transformers

    torch.set_num_threads(2)
    directory = os.path.join(args.pretrained, "smollm2")
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32
    ).eval()
    out: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy()
            greedy = model.generate(
                torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False,
                eos_token_id=None, pad_token_id=2,
            )[0, len(ids):].numpy()  # fmt: skip
        out[f"ids_{i}"] = np.array(ids, np.int32)
        out[f"last_logits_{i}"] = logits[-1].astype(np.float32)
        out[f"max_abs_logit_{i}"] = np.float32(np.abs(logits).max())
        out[f"greedy_{i}"] = greedy.astype(np.int32)
        print(f"prompt {i}: {len(ids)} tokens; greedy: {tokenizer.decode(greedy)!r}")
    np.savez_compressed(args.out, **out)
    meta = {
        "made_by": "scripts/make_smollm2_reference.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "prompts": PROMPTS,
    }
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes)")


if __name__ == "__main__":
    main()
