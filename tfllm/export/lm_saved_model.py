"""SavedModel export: raw strings in, generated text out, tokenizer in the graph.

Written with `keras.export.ExportArchive` (DESIGN §2: the measured path that
keeps Keras 3 variables initialised; the tokenizer must be tracked explicitly
— SentencePiece's resource, or an imported byte-level BPE's lookup tables —
or the save fails with "untracked resource"). Endpoints:

- `serving_default(prompts: string[None]) -> {"completions": string[None]}`:
  greedy continuation of `export.max_new_tokens` tokens per prompt, the
  signature TF Serving calls.
- `generate_<sampler>(prompts, max_new_tokens, temperature, top_k, top_p, seed)`
  for sampler in greedy / temperature / top_k / top_p: the same decode loop as
  `tfllm-generate --backend=keras`, so a seed gives the same text on both.
- `score(texts: string[None]) -> {"log_likelihood": float32[None], "tokens": int32[None]}`:
  each text's log-likelihood as a document (its tokens after an eos, the
  document separator training saw), summed over its first `max_length` tokens;
  `tokens` says how many were scored (0 for an empty text). For ranking
  candidates, filtering data, or perplexity outside Python.

Prompts are generated one at a time (`tf.map_fn`): rows of different lengths
never share padding, so each continuation equals the Keras one exactly.
Loaders must `import tensorflow_text` first (its ops live in that package).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.data.tokenizer_kinds import AnyTokenizer
from tfllm.export.verified import VerificationError, write_verified_saved_model
from tfllm.inference.generate import generate_ids
from tfllm.inference.sampling import SAMPLERS


def _completion_fn(model: keras.Model, tokenizer: AnyTokenizer, sampler: str):
    """Builds `(prompt, max_new, temperature, top_k, top_p, seed) -> text` for one prompt."""
    max_length = int(model.max_length)
    eos = int(tokenizer.eos_id)

    def complete_one(prompt, max_new_tokens, temperature, top_k, top_p, seed):
        max_new = tf.clip_by_value(max_new_tokens, 1, max_length - 1)
        ids = tf.cast(tokenizer.tokenize(prompt), tf.int32)
        # An empty prompt starts a new document: training separates them with eos.
        ids = tf.cond(tf.size(ids) > 0, lambda: ids, lambda: tf.constant([eos], tf.int32))
        ids = ids[-(max_length - max_new) :]  # truncate from the left to fit the context
        # The same [seed, 0] int64 seed `Generator.generate` uses, so text matches Keras.
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        new = generate_ids(
            model,
            ids[tf.newaxis, :],
            max_new,
            sampler=sampler,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed_pair,
            eos_id=eos,
        )[0]
        return tokenizer.detokenize(tf.boolean_mask(new, tf.not_equal(new, eos)))

    return complete_one


def _checked_sampler_args(sampler, max_new_tokens, temperature, top_k, top_p) -> list:
    """Assert ops for `check_sampler_args`' rules, inside the graph a server runs.

    A serving client is not the CLI: an infinite or negative temperature or a
    top_p of 0 would otherwise sample garbage without a word, so the
    signature fails with InvalidArgumentError naming the input (TF Serving
    answers it as a 400).
    """
    min_top_k = 1 if sampler == "top_k" else 0
    return [
        tf.debugging.assert_greater(
            max_new_tokens, 0, message="max_new_tokens must be >= 1"
        ),
        tf.debugging.assert_equal(
            tf.math.is_finite(temperature) & (temperature > 0.0),
            True,
            message="temperature must be > 0 and finite",
        ),
        tf.debugging.assert_greater_equal(
            top_k, min_top_k, message=f"top_k must be >= {min_top_k} for generate_{sampler}"
        ),
        tf.debugging.assert_equal(
            (top_p > 0.0) & (top_p <= 1.0), True, message="top_p must be in (0, 1]"
        ),
    ]


def _generate_endpoint(complete, sampler: str):
    """A batch endpoint over `complete` (a closure per sampler, not a default arg:
    default args would become part of the exported signature)."""

    def generate(prompts, max_new_tokens, temperature, top_k, top_p, seed):
        checks = _checked_sampler_args(sampler, max_new_tokens, temperature, top_k, top_p)
        with tf.control_dependencies(checks):
            prompts = tf.identity(prompts)
        completions = tf.map_fn(
            lambda p: complete(p, max_new_tokens, temperature, top_k, top_p, seed),
            prompts,
            fn_output_signature=tf.string,
        )
        return {"completions": completions}

    return generate


def _score_endpoint(model: keras.Model, tokenizer: AnyTokenizer):
    """`texts -> {log_likelihood, tokens}`, one text at a time (no shared padding)."""
    max_length = int(model.max_length)
    eos = int(tokenizer.eos_id)

    def score_one(text):
        ids = tf.cast(tokenizer.tokenize(text), tf.int32)[:max_length]
        inputs = tf.concat([tf.constant([eos], tf.int32), ids[:-1]], axis=0)

        def log_likelihood():
            logits = tf.cast(model(inputs[tf.newaxis], training=False)[0], tf.float32)
            return -tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=logits)
            )

        total = tf.cond(tf.size(ids) > 0, log_likelihood, lambda: tf.constant(0.0))
        return total, tf.size(ids)

    def score(texts):
        totals, counts = tf.map_fn(score_one, texts, fn_output_signature=(tf.float32, tf.int32))
        return {"log_likelihood": totals, "tokens": counts}

    return score


def build_archive(
    model: keras.Model, tokenizer: AnyTokenizer, max_new_tokens: int
) -> keras.export.ExportArchive:
    """The ExportArchive with the serving and generation endpoints."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    prompts_spec = tf.TensorSpec([None], tf.string, name="prompts")
    greedy = _completion_fn(model, tokenizer, "greedy")
    default_max_new = tf.constant(int(max_new_tokens), tf.int32)

    def serving_default(prompts):
        completions = tf.map_fn(
            lambda p: greedy(p, default_max_new, 1.0, 0, 1.0, tf.constant(0, tf.int32)),
            prompts,
            fn_output_signature=tf.string,
        )
        return {"completions": completions}

    archive.add_endpoint("serving_default", serving_default, input_signature=[prompts_spec])

    archive.add_endpoint(
        "score",
        _score_endpoint(model, tokenizer),
        input_signature=[tf.TensorSpec([None], tf.string, name="texts")],
    )

    for sampler in SAMPLERS:
        archive.add_endpoint(
            f"generate_{sampler}",
            _generate_endpoint(_completion_fn(model, tokenizer, sampler), sampler),
            input_signature=[
                prompts_spec,
                tf.TensorSpec([], tf.int32, name="max_new_tokens"),
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int32, name="top_k"),
                tf.TensorSpec([], tf.float32, name="top_p"),
                tf.TensorSpec([], tf.int32, name="seed"),
            ],
        )
    return archive


def export_saved_model(
    model: keras.Model,
    tokenizer: AnyTokenizer,
    target: str,
    *,
    max_new_tokens: int,
    verify_prompts: list[str],
    reference: list[str],
) -> dict:
    """Writes the SavedModel to `target` only if its greedy output equals `reference`.

    `reference` are the Keras model's greedy continuations of `verify_prompts`
    (`max_new_tokens` each); `write_verified_saved_model` reloads the archive
    from a temp dir, this runs and compares it, and only then is it renamed
    into place with its `verification.json`.
    """

    def verify(loaded) -> dict:
        serve = loaded.signatures["serving_default"]
        out = serve(prompts=tf.constant(verify_prompts, tf.string))["completions"].numpy()
        # As the tokenizers' `decode`: a byte-level BPE may stop inside a character.
        exported = [s.decode("utf-8", errors="replace") for s in out]
        mismatches = [
            {"prompt": p, "keras": k, "saved_model": e}
            for p, k, e in zip(verify_prompts, reference, exported, strict=True)
            if k != e
        ]
        if mismatches:
            first = mismatches[0]
            raise VerificationError(
                f"SavedModel output differs from Keras for prompt {first['prompt']!r}: "
                f"keras={first['keras'][:60]!r} saved_model={first['saved_model'][:60]!r}; "
                f"nothing written to {target}"
            )
        return {
            "check": "serving_default greedy completions == Keras greedy completions",
            "prompts": verify_prompts,
            "keras": reference,
            "saved_model": exported,
            "match": True,
            "max_new_tokens": max_new_tokens,
        }

    archive = build_archive(model, tokenizer, max_new_tokens)
    return write_verified_saved_model(target, archive, verify)
