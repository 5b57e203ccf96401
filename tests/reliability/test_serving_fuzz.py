"""The exported serving signature never crashes on arbitrary strings."""

import pytest
import tensorflow as tf
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfllm.export.verified import load_serving

PROMPTS = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200),
    min_size=1, max_size=4,
)


@pytest.fixture(scope="module")
def serving(trained_workdir, tmp_path_factory):
    import shutil

    workdir = tmp_path_factory.mktemp("fuzz") / "w"
    shutil.copytree(trained_workdir, workdir)
    proc = run_cli("export", f"--workdir={workdir}", "--max_new_tokens=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return load_serving(str(workdir / "export" / "saved_model"))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=PROMPTS)
def test_serving_default_handles_any_text(serving, prompts):
    out = serving.signatures["serving_default"](prompts=tf.constant(prompts))["completions"]
    assert out.shape == (len(prompts),)
    for completion in out.numpy():
        completion.decode("utf-8")  # always valid UTF-8


def test_prompt_longer_than_the_context_is_truncated_not_an_error(serving):
    long_prompt = "To be, or not to be, that is the question. " * 200  # ≫ 32 tokens
    out = serving.generate_top_p(tf.constant([long_prompt, ""]), tf.constant(10**6),
                                 tf.constant(0.8), tf.constant(0), tf.constant(0.9),
                                 tf.constant(3))["completions"]
    assert out.shape == (2,)


@pytest.mark.parametrize(
    "endpoint, temperature, top_k, top_p, max_new, message",
    [
        ("generate_temperature", float("inf"), 0, 1.0, 4, "temperature must be > 0 and finite"),
        ("generate_temperature", float("nan"), 0, 1.0, 4, "temperature must be > 0 and finite"),
        ("generate_top_p", -1.0, 0, 0.9, 4, "temperature must be > 0 and finite"),
        ("generate_top_p", 0.8, 0, 0.0, 4, r"top_p must be in \(0, 1\]"),
        ("generate_top_k", 0.8, 0, 1.0, 4, "top_k must be >= 1 for generate_top_k"),
        ("generate_greedy", 1.0, -3, 1.0, 4, "top_k must be >= 0"),
        ("generate_greedy", 1.0, 0, 1.0, 0, "max_new_tokens must be >= 1"),
    ],
)
def test_signature_refuses_bad_sampler_values_by_name(
    serving, endpoint, temperature, top_k, top_p, max_new, message
):
    # A server's client is not the CLI: the graph itself refuses what
    # check_sampler_args refuses, instead of sampling garbage.
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        getattr(serving, endpoint)(
            tf.constant(["ROMEO:"]), tf.constant(max_new), tf.constant(temperature),
            tf.constant(top_k), tf.constant(top_p), tf.constant(1),
        )
