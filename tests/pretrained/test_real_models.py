"""The real published models (fetched by ../shared/tools/fetch-pretrained), against transformers.

Skipped when the weights are absent. The reference outputs were computed by
transformers from the same GGUF file (scripts/make_smollm2_reference.py) and
are committed, so these tests need neither transformers nor torch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tfllm.inference.generate import generate_ids
from tfllm.inference.loading import load_trained
from tfllm.pretrained.importer import import_checkpoint

PRETRAINED = os.environ.get("TFLLM_PRETRAINED", os.path.expanduser("~/.cache/tfllm-pretrained"))
SMOLLM2 = os.path.join(PRETRAINED, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
REFERENCE = os.path.join(
    os.path.dirname(__file__), "..", "fixtures", "pretrained", "smollm2_reference.npz"
)

pytestmark = [
    pytest.mark.pretrained,
    pytest.mark.skipif(not os.path.isfile(SMOLLM2), reason="run ../shared/tools/fetch-pretrained"),
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("smollm2") / "w")
    import_checkpoint(SMOLLM2, workdir)
    return load_trained(workdir)


def test_smollm2_tokens_logits_and_greedy_match_transformers(smollm2):
    ref = np.load(REFERENCE)
    prompts = [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "ROMEO:\nBut, soft! what light through yonder window breaks? It is the east, and",
    ]
    for i, prompt in enumerate(prompts):
        ids = smollm2.tokenizer.encode(prompt)
        assert ids == ref[f"ids_{i}"].tolist()
        logits = smollm2.model(np.array([ids], np.int32)).numpy()[0, -1]
        # The bar: 1e-4 of the largest logit (over all positions, as measured by HF).
        assert np.abs(logits - ref[f"last_logits_{i}"]).max() <= 1e-4 * ref[f"max_abs_logit_{i}"]
        greedy = generate_ids(smollm2.model, np.array([ids], np.int32), 32)
        assert greedy.numpy()[0].tolist() == ref[f"greedy_{i}"].tolist()
