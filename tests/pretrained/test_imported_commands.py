"""Every command on an imported workdir, as on any run's: generate, evaluate, train, export,
compress; and one clear line where a command does not support the family (bert).

The tiny fixtures (tests/fixtures/pretrained/*_tiny) are imported once per
module. Library calls run in-process; the `slow` tests run the commands
themselves (the natural fine-tune command, mirrored batch generation, the
one-line refusals). Perplexity is checked against transformers, computed here
on the same token ids and windows, when transformers and torch are installed.
"""

from __future__ import annotations

import gc
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import last_stderr_line, run_cli, shakespeare_head

from tfllm.benchmark.runner import BenchSettings, run_benchmark
from tfllm.cli.common import setup_runtime
from tfllm.compress.run import CompressOptions, compress_config, compress_workdir
from tfllm.config import base_config, load_config_file, validate
from tfllm.data.corpus import read_documents
from tfllm.data.lm_data import _pieces, tokenize_documents
from tfllm.errors import TfllmError
from tfllm.evaluation.workdir import evaluate_workdir
from tfllm.export.verified import load_serving
from tfllm.export.workdir import export_dir, export_workdir
from tfllm.inference.chat import chat_prompt
from tfllm.inference.generate import Generator, generate_text
from tfllm.inference.loading import load_trained
from tfllm.inference.prompts import Prompt
from tfllm.inference.workdir import Sampling, generate, generate_batch
from tfllm.pretrained.importer import import_checkpoint
from tfllm.training.run import train

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pretrained")
SOURCES = {"llama": "llama_tiny", "gpt2": "gpt2_tiny", "bert": "bert_tiny"}
PRETRAINED = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
SMOLLM2 = os.path.join(PRETRAINED, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SAMPLERS = {
    "greedy": Sampling(max_new_tokens=8),
    "temperature": Sampling(max_new_tokens=8, sampler="temperature", temperature=0.9, seed=3),
    "top_k": Sampling(max_new_tokens=8, sampler="top_k", top_k=20, seed=4),
    "top_p": Sampling(max_new_tokens=8, sampler="top_p", top_p=0.8, seed=5),
}
PROMPTS = ["ROMEO:", "Hello world, how are", ""]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for family, name in SOURCES.items():
        out[family] = str(root / family)
        import_checkpoint(os.path.join(FIXTURES, name), out[family])
    return out


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> str:
    """~4,000 tokens of Shakespeare for the fixtures' byte-level BPE (56 windows of 64)."""
    path = tmp_path_factory.mktemp("text") / "shakespeare.txt"
    path.write_text(shakespeare_head(6000), encoding="utf-8")
    return str(path)


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message
    return message


# ------------------------------------------------------------------ generate


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_prompt_ids_are_transformers_ids_without_a_bos(imported, family):
    """`tfllm-generate` encodes a prompt as transformers does (no BOS added where the
    model's tokenizer adds none); GPT-2's EOS comes from its config.json."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(os.path.join(FIXTURES, SOURCES[family]))
    trained = load_trained(imported[family])
    for prompt in PROMPTS[:2]:
        ids = trained.tokenizer.encode(prompt)
        assert ids == hf(prompt)["input_ids"]
        assert trained.tokenizer.bos_id not in ids
    assert trained.tokenizer.eos_id >= 0  # gpt2_tiny names <|endoftext|> in config.json only


def _keras_texts(trained, samplings: dict[str, Sampling], prompt: str = "ROMEO:",
                 generator: Generator | None = None) -> dict[str, str]:  # fmt: skip
    """What `generate(..., backend="keras")` returns, from one loaded model."""
    generator = generator or Generator(trained.model)
    return {
        name: generate_text(generator, trained.tokenizer, [prompt], s.max_new_tokens,
                            sampler=s.sampler, temperature=s.temperature, top_k=s.top_k,
                            top_p=s.top_p, seed=s.seed)[0]  # fmt: skip
        for name, s in samplings.items()
    }


def test_batch_generation_equals_one_prompt_at_a_time(imported):
    """--input_file: prompt i with seed + i equals the single-prompt call; no BOS counted."""
    sampling = SAMPLERS["top_k"]
    prompts = [Prompt(i, i + 1, p) for i, p in enumerate(PROMPTS)]
    rows = generate_batch(imported["llama"], prompts, sampling, batch_size=2).rows
    trained = load_trained(imported["llama"])
    generator = Generator(trained.model)
    for row in rows:
        single = {"s": Sampling(**{**sampling.__dict__, "seed": sampling.seed + row["index"]})}
        assert row["completion"] == _keras_texts(trained, single, row["prompt"], generator)["s"]
        assert row["prompt_tokens"] == max(1, len(trained.tokenizer.encode(row["prompt"])))


# ------------------------------------------------------------------ evaluate


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_perplexity_on_a_file_matches_transformers(imported, family, text_file):
    """Same token ids, same non-overlapping windows of max_length (whole batches of 8),
    mean loss within 1e-4 relative."""
    evaluation = evaluate_workdir(imported[family], data=text_file, data_format="text",
                                  batch_size=8)  # fmt: skip
    loss, tokens = evaluation.metrics["loss"], evaluation.metrics["tokens"]
    assert np.isfinite(loss) and tokens == 56 * 64
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    directory = os.path.join(FIXTURES, SOURCES[family])
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    docs = read_documents(text_file, "text", "text", what="test").texts
    ids = [i for doc in docs for i in [*hf_tokenizer(doc)["input_ids"], hf.config.eos_token_id]]
    trained = load_trained(imported[family])
    assert tokenize_documents(trained.tokenizer, docs).tolist() == ids
    seq = int(trained.config.model.max_length)
    n = (len(ids) - 1) // seq // 8 * 8
    windows = torch.tensor(np.stack([ids[k * seq : k * seq + seq + 1] for k in range(n)]))
    with torch.no_grad():
        logits = hf(windows[:, :-1]).logits.double()
    reference = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)
    ).item()
    print(f"{family}: tfllm loss {loss:.8f}, transformers {reference:.8f} on {tokens} tokens")
    assert n * seq == tokens
    assert abs(loss - reference) <= 1e-4 * reference


WIKITEXT = " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 \n\n\n It was released .\nNext\n"


def test_documents_are_cut_only_where_byte_level_ids_cannot_change():
    r"""A byte-level BPE's document is tokenized in pieces cut after a newline between two
    non-space characters only: "\n\n" and " \n" (WikiText's line ends) stay whole, as in
    Hugging Face's whole-document ids (the SmolLM2 test below shows one token less)."""
    assert _pieces(WIKITEXT, by_line=False) == [WIKITEXT[:-5], "Next\n"]
    assert _pieces("a\nb", by_line=True) == ["a\n", "b"]  # tfllm's SentencePiece runs: lines


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_exports_are_verified(imported, family):
    """SavedModel: greedy text == Keras; TFLite: logits, perplexity and greedy text on
    eval windows == Keras; the cache is the model's [kv_heads, max_length, head_dim]."""
    workdir = imported[family]
    saved = export_workdir(workdir, "saved_model", max_new_tokens=8).record
    assert saved["match"] is True and saved["keras"] == saved["saved_model"]
    lite = export_workdir(workdir, "tflite").record
    assert lite["max_abs_diff"] <= lite["tolerance"]["max_abs_diff"]
    assert lite["greedy"]["identical"] and lite["perplexity_increase"] <= 1e-3
    config = load_trained(workdir).config.model
    heads = config.num_kv_heads or config.num_heads
    head_dim = config.head_dim or config.hidden_dim // config.num_heads
    cache = lite["signatures"]["decode"]["inputs"]["kv_cache_0"]["shape"]
    assert cache == [2, 1, heads, config.max_length, head_dim]
    assert {"bpe.json", "tokenizer.json"} <= set(os.listdir(export_dir(workdir, "tflite")))


def test_every_sampler_gives_the_same_text_on_every_backend(imported):
    """The llama's exports (the test above) run every sampler as Keras does, seed for seed."""
    workdir = imported["llama"]
    if not os.path.isfile(os.path.join(export_dir(workdir, "saved_model"), "verification.json")):
        export_workdir(workdir, "saved_model", max_new_tokens=8)
    if not os.path.isfile(os.path.join(export_dir(workdir, "tflite"), "model.tflite")):
        export_workdir(workdir, "tflite")
    keras_texts = _keras_texts(load_trained(workdir), SAMPLERS)
    assert len(set(keras_texts.values())) > 1
    for name, sampling in SAMPLERS.items():
        assert generate(workdir, "ROMEO:", sampling, backend="litert") == [keras_texts[name]]
    assert generate(workdir, "ROMEO:", SAMPLERS["top_p"], backend="saved_model") == [
        keras_texts["top_p"]
    ]
    serving = load_serving(export_dir(workdir, "saved_model"))  # what backend=saved_model calls
    for name, s in SAMPLERS.items():
        out = getattr(serving, f"generate_{s.sampler}")(
            tf.constant(["ROMEO:"]), tf.constant(s.max_new_tokens),
            tf.constant(s.temperature), tf.constant(s.top_k), tf.constant(s.top_p),
            tf.constant(s.seed),
        )  # fmt: skip
        text = out["completions"].numpy()[0].decode("utf-8", errors="replace")
        assert text == keras_texts[name], name


def test_litert_perplexity_equals_keras(imported, text_file):
    workdir = imported["llama"]
    if not os.path.isfile(os.path.join(workdir, "export", "tflite_none", "model.tflite")):
        export_workdir(workdir, "tflite")
    args = dict(data=text_file, data_format="text", batch_size=8, max_batches=1)
    keras_loss = evaluate_workdir(workdir, **args).metrics["loss"]
    litert_loss = evaluate_workdir(workdir, backend="litert", **args).metrics["loss"]
    assert abs(litert_loss - keras_loss) <= 1e-4 * keras_loss


# ------------------------------------------------------------------ train


def _fine_tune_overrides(text_file: str, steps: int) -> dict[str, dict]:
    return {
        "data": dict(train_path=text_file, format="text"),
        "train": dict(num_steps=steps, batch_size=8, warmup_steps=2, steps_per_loop=10,
                      eval_every=10, checkpoint_every=10, eval_batches=2, sample_tokens=4),
    }  # fmt: skip


def test_fine_tune_gpt2_from_its_imported_config(imported, corpus_file, tmp_path):
    """The config is the source's config.json; the tokenizer comes with init_from."""
    source = imported["gpt2"]
    config = load_config_file(os.path.join(source, "config.json"))
    config.train.init_from = source
    for section, values in _fine_tune_overrides(corpus_file, 20).items():
        config[section].update(values)
    validate(config)
    setup_runtime(config)
    workdir = str(tmp_path / "ft")
    metrics = train(config, workdir)
    history = json.loads(open(os.path.join(workdir, "history.json")).read())["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert metrics["eval_loss"] < np.log(320) - 0.1  # the random fixture starts at ln(vocab)
    for name in ("tokenizer.json", "bpe.json"):
        with open(os.path.join(source, "tokenizer", name), "rb") as a:
            with open(os.path.join(workdir, "tokenizer", name), "rb") as b:
                assert a.read() == b.read()


def test_init_from_with_another_model_is_one_line(imported, text_file, tmp_path):
    config = base_config()  # a GPT, not the imported llama
    config.train.init_from = imported["llama"]
    config.data.update(train_path=text_file, format="text")
    with pytest.raises(TfllmError) as info:
        train(config, str(tmp_path / "w"))
    assert "--config=" in _one_line(info.value) and "'llama'" in str(info.value)
    assert not os.path.exists(tmp_path / "w")


# ------------------------------------------------------------------ compress


@pytest.fixture(scope="module")
def llama_on_corpus(imported, corpus_file, tmp_path_factory) -> str:
    """The imported llama with its run data (config.data, what compressing trains and
    evaluates on) set to the small corpus instead of the bundled Tiny Shakespeare."""
    workdir = str(tmp_path_factory.mktemp("teacher") / "llama")
    shutil.copytree(imported["llama"], workdir)
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["data"].update(train_path=corpus_file, format="text")
    with open(path, "w") as f:
        json.dump(config, f)
    return workdir


def _student() -> object:
    student = base_config()
    student.model.update(name="gpt", max_length=32, num_layers=1, num_heads=2, hidden_dim=16,
                         intermediate_dim=32, dropout=0.0)  # fmt: skip
    student.train.update(num_steps=6, batch_size=4, steps_per_loop=3, eval_every=6,
                         checkpoint_every=6, eval_batches=1, sample_tokens=0,
                         warmup_steps=1)  # fmt: skip
    student.tokenizer.vocab_size = 1024  # a recipe's SentencePiece setting: an import has none
    return student


def test_distill_a_llama_into_a_gpt_student_with_its_tokenizer(llama_on_corpus, tmp_path):
    teacher = llama_on_corpus
    output = str(tmp_path / "student")
    record = compress_workdir(teacher, output, CompressOptions("distill", student=_student()))
    assert record["teacher_params"] > record["num_params"]
    trained = load_trained(output)
    assert trained.config.model.name == "gpt" and trained.tokenizer.vocab_size == 320
    assert trained.model.vocab_size == 320
    with open(os.path.join(teacher, "tokenizer", "bpe.json"), "rb") as a:
        with open(os.path.join(output, "tokenizer", "bpe.json"), "rb") as b:
            assert a.read() == b.read()
    assert np.isfinite(record["metrics"]["eval_loss"])
    assert generate(output, "ROMEO:", SAMPLERS["greedy"])[0] is not None


@pytest.mark.parametrize("method", ["prune", "qat", "quantize"])
def test_prune_qat_and_quantize_a_llama(llama_on_corpus, tmp_path, method, monkeypatch):
    # Keras' quantize() calls gc.collect() after each layer: ~1 s each in a test process
    # holding many graphs (measured: 42 s of this test's 45); the result is the same.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    output = str(tmp_path / method)
    record = compress_workdir(llama_on_corpus, output, CompressOptions(method, steps=3))
    assert np.isfinite(record["metrics"]["eval_loss"])
    if method == "prune":
        assert record["sparsity"] == pytest.approx(0.8, abs=0.01)
    if method == "quantize":
        assert record["weight_bytes"] < record["source_weight_bytes"]


# ------------------------------------------------------------------ refused, one line


def test_bert_is_refused_in_one_line_by_every_command_but_hf_export(imported, tmp_path):
    bert = imported["bert"]
    config = load_config_file(os.path.join(bert, "config.json"))
    calls = {
        "evaluate": lambda: evaluate_workdir(bert),
        "generate": lambda: generate(bert, "hi"),
        "generate_batch": lambda: generate_batch(bert, [Prompt(0, 1, "hi")]),
        "saved_model": lambda: export_workdir(bert, "saved_model"),
        "tflite": lambda: export_workdir(bert, "tflite"),
        "train": lambda: train(config, str(tmp_path / "t")),
        "compress": lambda: compress_config(bert, CompressOptions("quantize")),
    }
    settings = BenchSettings("decode", "none", 1, 1, 1, 1, 4, 4)
    calls["benchmark"] = lambda: run_benchmark(config, settings)
    for name, call in calls.items():
        with pytest.raises(TfllmError) as info:
            call()
        assert "bert" in _one_line(info.value), name
    assert not os.path.exists(tmp_path / "t")


def test_benchmark_takes_an_imported_config_but_no_gpt2_peer_for_a_llama(imported):
    config = load_config_file(os.path.join(imported["llama"], "config.json"))
    settings = BenchSettings("decode", "keras_hub", 1, 1, 1, 1, 4, 4)
    with pytest.raises(TfllmError, match="keras-hub's GPT-2") as info:
        run_benchmark(config, settings)
    _one_line(info.value)


# ------------------------------------------------------------------ the commands


@pytest.mark.slow
def test_fine_tune_command_resumes_and_generates(imported, corpus_file, tmp_path):
    """The documented command: --config=W/config.json --config.train.init_from=W."""
    source, workdir = imported["llama"], str(tmp_path / "ft")
    args = [f"--config={source}/config.json", f"--workdir={workdir}",
            f"--config.train.init_from={source}"]  # fmt: skip
    for section, values in _fine_tune_overrides(corpus_file, 20).items():
        args += [f"--config.{section}.{key}={value}" for key, value in values.items()]
    proc = run_cli("train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Initialised model weights from {source}" in proc.stdout
    history = json.loads(open(os.path.join(workdir, "history.json")).read())["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]
    assert os.path.isfile(os.path.join(workdir, "tokenizer", "chat_template.jinja"))
    proc = run_cli("train", *args, "--config.train.num_steps=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from step 20" in proc.stdout
    proc = run_cli("generate", f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=8")
    assert proc.returncode == 0 and proc.stdout.startswith("ROMEO:"), proc.stderr[-3000:]


@pytest.mark.slow
def test_mirrored_batch_generation_equals_one_device(imported, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["ROMEO:", "Hello world", "The king", "JULIET:"]) + "\n")
    out = tmp_path / "out.jsonl"
    proc = run_cli("generate", f"--workdir={imported['llama']}", f"--input_file={prompts}",
                   f"--output_file={out}", "--max_new_tokens=6", "--sampler=top_k",
                   "--strategy=mirrored", "--logical_cpus=2", "--batch_size=4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mirrored × 2" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    one_device = [Prompt(i, i + 1, r["prompt"]) for i, r in enumerate(rows)]
    sampling = Sampling(max_new_tokens=6, sampler="top_k")
    expected = generate_batch(imported["llama"], one_device, sampling, batch_size=4).rows
    assert [r["completion"] for r in rows] == [r["completion"] for r in expected]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, args, needle",
    [
        ("generate", ["--workdir={llama}", "--input_file={file}", "--output_file={out}",
                      "--tensor_parallel=2", "--logical_cpus=2"],
         "tensor_parallel: 2 is implemented for models 'gpt' and 'transformer_classifier' only"),
        ("evaluate", ["--workdir={bert}", "--data={file}", "--format=text"],
         "bert encoder, which has no language-model or classification metric"),
        ("export", ["--workdir={bert}", "--format=tflite"], "(--format=hf)"),
    ],
)  # fmt: skip
def test_unsupported_family_is_one_line_and_exit_2(imported, text_file, tmp_path, command, args,
                                                    needle):  # fmt: skip
    values = dict(imported, file=text_file, out=str(tmp_path / "o.jsonl"))
    proc = run_cli(command, *[a.format(**values) for a in args])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert needle in last_stderr_line(proc)


# ------------------------------------------------------------------ a real model


@pytest.mark.pretrained
@pytest.mark.skipif(not os.path.isfile(SMOLLM2), reason="run ../shared/tools/fetch-pretrained")
def test_smollm2_imports_chats_and_evaluates(tmp_path):
    workdir = str(tmp_path / "smollm2")
    import_checkpoint(SMOLLM2, workdir)
    prompt = chat_prompt(workdir, "What is the capital of France?")
    answer = generate(workdir, prompt, Sampling(max_new_tokens=16))[0]
    assert "Paris" in answer, answer
    text = tmp_path / "shakespeare.txt"
    text.write_text(shakespeare_head(3000), encoding="utf-8")  # ~800 tokens
    trained = load_trained(workdir)
    tokenizer = trained.tokenizer
    ids = tokenize_documents(tokenizer, [WIKITEXT]).tolist()
    assert ids == tokenizer.encode(WIKITEXT) + [tokenizer.eos_id]  # line by line: one more
    trained.config.model.max_length = 256  # the window (RoPE: any length up to the context)
    evaluation = evaluate_workdir(trained, data=str(text), data_format="text", batch_size=1)
    print(f"SmolLM2 (Q4_1) perplexity {evaluation.metrics['perplexity']:.2f} "
          f"on {evaluation.metrics['tokens']} tokens of Tiny Shakespeare")  # fmt: skip
    assert evaluation.metrics["tokens"] >= 512
    assert 5.0 < evaluation.metrics["perplexity"] < 100.0  # measured: 46.3
    shutil.rmtree(workdir)
