"""Streaming text from a tfllm `.litertlm` bundle in Google's LiteRT-LM, with no TensorFlow.

Needs only `pip install litert-lm-api==0.18.1`: the bundle carries the
model, its tokenizer and its stop tokens, and the engine (the C++ runtime
that also ships for Android, iOS and desktop) tokenizes, prefills, decodes
and detokenizes. Tokens are printed as the engine produces them. Usage:

    python examples/litert_generate.py runs/tiny/export/litertlm_none/model.litertlm "ROMEO:" 40
"""

import sys
import tempfile

import litert_lm


def stream(path: str, prompt: str, max_new_tokens: int) -> None:
    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    with tempfile.TemporaryDirectory() as cache:  # the engine's weight cache, not beside the model
        engine = litert_lm.Engine(path, backend=litert_lm.Backend.CPU(), cache_dir=cache)
        session = engine.create_session(
            apply_prompt_template=False,  # raw continuation, as tfllm's own models are trained
            sampler_config=litert_lm.SamplerConfig(top_k=1),  # greedy
            max_output_tokens=max_new_tokens,
        )
        sys.stdout.write(prompt)
        session.run_prefill([prompt])
        for piece in session.run_decode_async():
            sys.stdout.write("".join(piece.texts))
            sys.stdout.flush()
        sys.stdout.write("\n")
        session.close()
        engine.close()


if __name__ == "__main__":
    path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stream(path, prompt, n)
