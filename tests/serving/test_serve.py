"""`tfllm-serve` as a client sees it: a real server process, real HTTP.

References: the Keras decode loop `tfllm-generate` runs, on each prompt alone
with the same settings and seed (`_keras_text`), and the classifier's Keras
probabilities. Bad requests are sent to the running server, which must answer
each with a 4xx and one line, and keep serving.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import run_cli

from tfllm.inference.generate import Generator, generate_text
from tfllm.inference.loading import load_trained
from tfllm.serving.process import Server

pytestmark = pytest.mark.slow

REQUESTS = [  # prompt, settings
    ("ROMEO:", {"max_new_tokens": 9}),
    ("", {"max_new_tokens": 5, "sampler": "temperature", "temperature": 0.7, "seed": 4}),
    ("First Citizen: hear me speak.", {"max_new_tokens": 12, "sampler": "top_p", "seed": 2}),
    ("To", {"max_new_tokens": 7, "sampler": "top_k", "top_k": 5, "seed": 9}),
    (
        "O Romeo, Romeo! wherefore art thou",
        {"max_new_tokens": 3, "sampler": "top_p", "top_p": 0.5, "seed": 1},
    ),  # fmt: skip
    ("KING", {"max_new_tokens": 12, "sampler": "temperature", "temperature": 1.3, "seed": 7}),
]


@pytest.fixture(scope="module")
def lm_workdir(trained_workdir, tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("serve") / "tinylm"
    shutil.copytree(trained_workdir, workdir)
    return str(workdir)


@pytest.fixture(scope="module")
def lm_server(lm_workdir):
    server = Server(lm_workdir, "--max_batch=4", "--batch_window_ms=50", "--stream_chunk=3")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keras_texts(lm_workdir) -> list[str]:
    trained = load_trained(lm_workdir)
    generator = Generator(trained.model, use_xla=False)
    texts = []
    for prompt, settings in REQUESTS:
        s = {"sampler": "greedy", "temperature": 1.0, "top_k": 40, "top_p": 0.9, "seed": 0,
             **settings}  # fmt: skip
        n = s.pop("max_new_tokens")
        texts.append(generate_text(generator, trained.tokenizer, [prompt], n, **s)[0])
    return texts


def _post(url: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(url, content=content, timeout=120, **kw)


def test_status_metadata_and_health(lm_server) -> None:
    assert httpx.get(f"{lm_server.url}/healthz").json()["status"] == "ok"
    status = httpx.get(lm_server.model_url).json()["model_version_status"][0]
    assert status["state"] == "AVAILABLE"
    meta = httpx.get(f"{lm_server.model_url}/metadata").json()["metadata"]
    assert meta["kind"] == "lm" and meta["family"] == "gpt" and meta["max_length"] == 32


def test_each_request_gives_tfllm_generates_text(lm_server, keras_texts) -> None:
    for (prompt, settings), expected in zip(REQUESTS, keras_texts, strict=True):
        out = _post(f"{lm_server.model_url}:generate", {"prompt": prompt, **settings}).json()
        assert out["completion"] == expected, (prompt, settings)
        assert out["finish_reason"] in ("eos", "length")


def test_concurrent_requests_are_batched_and_keep_their_text(lm_server, keras_texts) -> None:
    before = httpx.get(f"{lm_server.model_url}/metadata").json()["metadata"]["served"]
    bodies = [{"prompt": p, **s} for p, s in REQUESTS] * 2
    with ThreadPoolExecutor(len(bodies)) as pool:
        outs = list(pool.map(lambda b: _post(f"{lm_server.model_url}:generate", b), bodies))
    assert [o.json()["completion"] for o in outs] == keras_texts * 2
    after = httpx.get(f"{lm_server.model_url}/metadata").json()["metadata"]["served"]
    assert after["rows"] - before["rows"] == len(bodies)
    assert after["batches"] - before["batches"] < len(bodies)  # some shared a batch


def test_predict_in_tf_servings_row_and_columnar_shapes(lm_server, keras_texts) -> None:
    rows = [{"prompt": p, **s} for p, s in REQUESTS]
    out = _post(f"{lm_server.model_url}:predict", {"instances": rows}).json()
    assert out == {"predictions": keras_texts}
    greedy = _post(f"{lm_server.model_url}:predict",
                   {"instances": [{"prompt": "ROMEO:", "max_new_tokens": 9}]}).json()  # fmt: skip
    assert greedy["predictions"] == keras_texts[:1]
    columnar = _post(f"{lm_server.model_url}:predict", {"inputs": {"prompts": ["ROMEO:"]}}).json()
    assert list(columnar) == ["outputs"] and len(columnar["outputs"]) == 1


def test_streamed_events_add_up_to_the_completion(lm_server, keras_texts) -> None:
    prompt, settings = REQUESTS[2]
    events = []
    body = json.dumps({"prompt": prompt, **settings, "stream": True})
    with httpx.stream("POST", f"{lm_server.model_url}:generate", content=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    assert [k for k, _ in events][-1] == "done" and len(events) >= 3  # tokens came in chunks
    streamed = "".join(e["text"] for k, e in events if k == "token")
    done = events[-1][1]
    assert done["completion"] == keras_texts[2]
    assert streamed == done["completion"].rstrip("\ufffd") or streamed == done["completion"]
    assert sum(len(e["tokens"]) for k, e in events if k == "token") == done["num_tokens"]


def test_a_client_that_leaves_mid_stream_frees_its_row(lm_server) -> None:
    def served() -> dict:
        return httpx.get(f"{lm_server.model_url}/metadata").json()["metadata"]["served"]

    before = served()["cancelled"]
    body = json.dumps({"prompt": "ROMEO:", "max_new_tokens": 25, "stream": True,
                       "sampler": "temperature", "seed": 3})  # fmt: skip
    with httpx.stream("POST", f"{lm_server.model_url}:generate", content=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # hang up after the first token
    for _ in range(100):
        if served()["cancelled"] > before:
            break
        httpx.get(f"{lm_server.url}/healthz")
    assert served()["cancelled"] == before + 1
    ok = _post(f"{lm_server.model_url}:generate", {"prompt": "ROMEO:", "max_new_tokens": 4})
    assert ok.status_code == 200


BAD = [  # (method path suffix, body, status, message fragment)
    (":generate", "{not json", 400, "malformed JSON"),
    (":generate", "", 400, "body is empty"),
    (":generate", {"max_new_tokens": 3}, 400, "prompt: missing field"),
    (":generate", {"prompt": 7}, 400, "prompt: must be a string"),
    (":generate", {"prompt": "a", "max_new_tokens": 0}, 400, "max_new_tokens: must be in"),
    (":generate", {"prompt": "a", "max_new_tokens": 10**9}, 400, "max_new_tokens: must be in"),
    (":generate", {"prompt": "a", "max_new_tokens": "5"}, 400, "max_new_tokens: must be an int"),
    (":generate", {"prompt": "a", "sampler": "beam"}, 400, "sampler: must be one of"),
    (":generate", {"prompt": "a", "temperature": -1}, 400, "temperature: must be > 0"),
    (":generate", {"prompt": "a", "sampler": "top_p", "top_p": 2}, 400, "top_p: must be in"),
    (":generate", {"prompt": "a", "sampler": "top_k", "top_k": 0}, 400, "top_k: must be >= 1"),
    (":generate", {"prompt": "a", "temprature": 0.5}, 400, "temprature: unknown field"),
    (":generate", {"prompt": "a", "stream": "yes"}, 400, "stream: must be true or false"),
    (":generate", {"prompt": "the king " * 40}, 400, "context of 32 tokens"),
    (":generate", {"prompt": "ROMEO", "max_new_tokens": 31}, 400, "exceed the model's context"),
    (":generate", [1, 2], 400, "JSON object"),
    (":predict", {"instances": []}, 400, "non-empty list"),
    (":predict", {"instances": ["a"], "inputs": ["b"]}, 400, "exactly one of"),
    (":predict", {"instances": [{"text": "a"}]}, 400, "missing field 'prompt'"),
    (":predict", {"instances": [3]}, 400, "must be a string or an object"),
    (":classify", {"instances": ["a"]}, 404, "unknown method"),
    ("x:generate", {"prompt": "a"}, 404, "no model named"),
]


def test_bad_requests_get_a_4xx_with_one_line_and_the_server_stays_up(lm_server) -> None:
    for suffix, body, status, fragment in BAD:
        url = lm_server.model_url + suffix if not suffix.startswith("x") else (
            f"{lm_server.url}/v1/models/{suffix}")  # fmt: skip
        response = _post(url, body)
        assert response.status_code == status, (suffix, body, response.text)
        error = response.json()["error"]
        assert fragment in error and "\n" not in error, (body, error)
    assert httpx.get(f"{lm_server.url}/v1/nothing").status_code == 404
    assert httpx.get(f"{lm_server.url}/healthz").status_code == 200
    ok = _post(f"{lm_server.model_url}:generate", {"prompt": "ROMEO:", "max_new_tokens": 9})
    assert ok.status_code == 200 and ok.json()["num_tokens"] >= 1


def test_saved_model_backend_serves_the_same_text(lm_workdir, keras_texts) -> None:
    proc = run_cli("export", f"--workdir={lm_workdir}", "--max_new_tokens=6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    server = Server(lm_workdir, "--backend=saved_model", "--batch_window_ms=50")
    try:
        rows = [{"prompt": p, **s} for p, s in REQUESTS]
        out = _post(f"{server.model_url}:predict", {"instances": rows}).json()
        assert out == {"predictions": keras_texts}
        meta = httpx.get(f"{server.model_url}/metadata").json()["metadata"]
        assert meta["backend"] == "saved_model"
    finally:
        server.stop()


def test_classifier_predict_gives_labels_and_probabilities(trained_classifier) -> None:
    from tfllm.export.classifier_saved_model import keras_probabilities

    texts = ["a fine and moving film", "dull , lifeless and far too long", ""]
    trained = load_trained(trained_classifier)
    expected = keras_probabilities(trained.model, trained.tokenizer, texts,
                                   int(trained.model.max_length))  # fmt: skip
    server = Server(trained_classifier)
    try:
        out = _post(f"{server.model_url}:predict", {"instances": texts}).json()["predictions"]
        got = np.array([row["probabilities"] for row in out])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert [row["label"] for row in out] == [
            trained.labels.names[i] for i in expected.argmax(-1)
        ]
        bad = _post(f"{server.model_url}:generate", {"prompt": "x"})
        assert bad.status_code == 404 and "unknown method" in bad.json()["error"]
    finally:
        server.stop()
