"""Greedy text generation from a tfllm LM `.tflite`, with no TensorFlow installed.

Needs only numpy, sentencepiece and ai-edge-litert (what a Raspberry Pi or any
edge Python has); the same calls map one to one onto LiteRT's Kotlin/Swift/C++
signature-runner APIs. Usage:

    python examples/litert_generate.py runs/shakespeare/export/tflite_none "ROMEO:" 40
"""

import sys

import numpy as np
import sentencepiece as spm
from ai_edge_litert.interpreter import Interpreter


def generate(export_dir: str, prompt: str, max_new_tokens: int) -> str:
    sp = spm.SentencePieceProcessor(model_file=f"{export_dir}/tokenizer.model")
    interpreter = Interpreter(model_path=f"{export_dir}/model.tflite")
    prefill = interpreter.get_signature_runner("prefill")  # the whole-context bucket
    decode = interpreter.get_signature_runner("decode")
    max_length = int(prefill.get_input_details()["tokens"]["shape"][1])

    ids = sp.encode(prompt) or [sp.eos_id()]  # an empty prompt starts a new document
    max_new_tokens = min(max_new_tokens, max_length - 1)
    ids = ids[-(max_length - max_new_tokens):]  # keep the most recent context
    tokens = np.zeros([1, max_length], np.int32)
    tokens[0, : len(ids)] = ids
    out = prefill(tokens=tokens, length=np.array([len(ids)], np.int32))

    new_ids = []
    for position in range(len(ids), len(ids) + max_new_tokens):
        token = int(np.argmax(out["logits"][0]))  # greedy
        if token == sp.eos_id():
            break
        new_ids.append(token)
        if position == len(ids) + max_new_tokens - 1:
            break
        caches = {name: value for name, value in out.items() if name.startswith("kv_cache_")}
        out = decode(
            token=np.array([[token]], np.int32),
            position=np.array([position], np.int32),
            **caches,
        )
    return sp.decode(new_ids)


if __name__ == "__main__":
    export_dir, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(prompt + generate(export_dir, prompt, n))
