"""Property test: the tokenizer round-trips ANY Unicode text, in eager and in-graph."""

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfllm.data.corpus import bundled_paths, read_documents
from tfllm.data.tokenizer import Tokenizer

# Surrogates cannot be encoded as UTF-8, so they are not text a user can have.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    text = read_documents(bundled_paths("shakespeare")["train"], "text").texts[0][:20_000]
    return Tokenizer.train([text], vocab_size=384)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=TEXT)
def test_decode_encode_is_identity(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == text
    graph_ids = tokenizer.tokenize(tf.constant(text))
    assert tokenizer.detokenize(graph_ids).numpy().decode("utf-8") == text
