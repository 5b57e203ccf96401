"""The LM SavedModel decodes a batch together and each row keeps its own text.

References: `tfllm-generate`'s Keras loop on each prompt alone (the
`Generator` of the workdir's checkpoint), TF's own `saved_model_cli run`, and
a fresh interpreter that imports only `tensorflow` and `tensorflow_text`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import run_cli

from tfllm.export.verified import load_serving
from tfllm.inference.generate import Generator, generate_text
from tfllm.inference.loading import load_trained

# Lengths 0 to well past the 32-token context, so rows are padded and truncated.
PROMPTS = ["", "To be", "First Citizen: Before we proceed any further, hear me speak.",
           "O Romeo, Romeo! wherefore art thou Romeo? " * 6, "Speak"]  # fmt: skip
ROWS = [  # sampler, max_new_tokens, temperature, top_k, top_p, seed
    ("greedy", 6, 1.0, 0, 1.0, 0),
    ("temperature", 9, 0.8, 0, 1.0, 5),
    ("top_k", 3, 1.2, 4, 1.0, 9),
    ("top_p", 9, 1.0, 0, 0.8, 2),
    ("top_k", 9, 0.7, 1, 1.0, 1),
]


@pytest.fixture(scope="module")
def exported(trained_workdir, tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("batched") / "w"
    shutil.copytree(trained_workdir, workdir)
    proc = run_cli("export", f"--workdir={workdir}", "--max_new_tokens=6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(workdir)


def _keras_alone(workdir: str) -> list[str]:
    trained = load_trained(workdir)
    generator = Generator(trained.model, use_xla=False)
    return [
        generate_text(generator, trained.tokenizer, [prompt], n, sampler=s, temperature=t,
                      top_k=k, top_p=p, seed=seed)[0]  # fmt: skip
        for prompt, (s, n, t, k, p, seed) in zip(PROMPTS, ROWS, strict=True)
    ]


def _columns() -> dict:
    s, n, t, k, p, seed = zip(*ROWS, strict=True)
    return dict(prompts=list(PROMPTS), max_new_tokens=list(n), sampler=list(s),
                temperature=list(t), top_k=list(k), top_p=list(p), seed=list(seed))  # fmt: skip


def test_per_row_settings_in_one_batch_equal_each_prompt_alone(exported) -> None:
    loaded = load_serving(f"{exported}/export/saved_model")
    cols = _columns()
    dtypes = dict(prompts=tf.string, max_new_tokens=tf.int32, sampler=tf.string,
                  temperature=tf.float32, top_k=tf.int32, top_p=tf.float32,
                  seed=tf.int32)  # fmt: skip
    out = loaded.signatures["generate"](**{k: tf.constant(v, dtypes[k]) for k, v in cols.items()})
    texts = [t.decode("utf-8", errors="replace") for t in out["completions"].numpy()]
    assert texts == _keras_alone(exported)
    counts = out["num_tokens"].numpy()
    assert all(0 < c <= n for c, n in zip(counts, cols["max_new_tokens"], strict=True))


def test_serving_default_batch_equals_one_prompt_at_a_time(exported) -> None:
    serve = load_serving(f"{exported}/export/saved_model").signatures["serving_default"]
    batch = serve(prompts=tf.constant(PROMPTS))["completions"].numpy().tolist()
    alone = [serve(prompts=tf.constant([p]))["completions"].numpy()[0] for p in PROMPTS]
    assert batch == alone


def test_unknown_sampler_is_refused_by_name(exported) -> None:
    loaded = load_serving(f"{exported}/export/saved_model")
    cols = {**_columns(), "sampler": ["greedy", "beam", "greedy", "greedy", "greedy"]}
    dtypes = dict(max_new_tokens=tf.int32, temperature=tf.float32, top_k=tf.int32,
                  top_p=tf.float32, seed=tf.int32)  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError, match="sampler must be one of"):
        loaded.signatures["generate"](
            **{k: tf.constant(v, dtypes.get(k, tf.string)) for k, v in cols.items()}
        )


def test_saved_model_cli_and_a_tf_only_process_serve_the_batch(exported) -> None:
    """No tfllm import: TF's `saved_model_cli run` (with TF Text's ops loaded,
    as TF Serving links them in) and a plain TF program both get the text."""
    cli = (
        "import sys, tensorflow_text; from tensorflow.python.tools import saved_model_cli; "
        "sys.argv = ['saved_model_cli'] + sys.argv[1:]; saved_model_cli.main()"
    )
    cols = _columns()
    exprs = ";".join(f"{k}={v!r}" for k, v in cols.items())
    ran = subprocess.run(
        [sys.executable, "-c", cli, "run", f"--dir={exported}/export/saved_model",
         "--tag_set=serve", "--signature_def=generate", f"--input_exprs={exprs}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    keras_texts = _keras_alone(exported)
    assert "completions" in ran.stdout and "num_tokens" in ran.stdout
    for text in keras_texts:  # numpy prints each completion as the repr of its bytes
        assert repr(text.encode("utf-8")) in ran.stdout, text

    program = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "out = m.signatures['serving_default'](prompts=tf.constant(json.loads(sys.argv[2])))\n"
        "print(json.dumps([t.decode('utf-8', 'replace') for t in out['completions'].numpy()]))\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", program, f"{exported}/export/saved_model", json.dumps(PROMPTS)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "tfllm" not in fresh.stderr
    greedy = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert greedy[0] == keras_texts[0]  # row 0 is greedy with the export's 6 tokens
