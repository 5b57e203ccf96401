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
- `generate(prompts, max_new_tokens, sampler, temperature, top_k, top_p, seed)`,
  every input one value per prompt (`sampler` a name): unrelated requests in
  one call, TF Serving's row format; returns `completions` and `num_tokens`.
- `score(texts: string[None]) -> {"log_likelihood": float32[None], "tokens": int32[None]}`:
  each text's log-likelihood as a document (its tokens after an eos, the
  document separator training saw), summed over its first `max_length` tokens;
  `tokens` says how many were scored (0 for an empty text). For ranking
  candidates, filtering data, or perplexity outside Python.

Every endpoint decodes its prompts together, left-padded with each row's
padding masked (`tfllm.inference.row_decode`): a row's continuation equals
the one `tfllm-generate` gives for it alone (verified below on a batch).
Loaders must `import tensorflow_text` first (its ops live in that package).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.data.tokenizer_kinds import AnyTokenizer
from tfllm.export.verified import VerificationError, write_verified_saved_model
from tfllm.inference.row_decode import RowSettings, generate_rows
from tfllm.inference.sampling import SAMPLERS


def _fitted_rows(
    tokenizer: AnyTokenizer, prompts: tf.Tensor, max_new: tf.Tensor, max_length: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Prompts `[N]` -> left-padded ids `[N, W]` and each row's padding `[N]`.

    As `tfllm-generate` fits one prompt: an empty prompt is `[eos]` (training
    separates documents with eos) and a row keeps only its last
    `max_length - max_new` tokens (the most recent context matters most).
    """
    eos = int(tokenizer.eos_id)
    ragged = tf.cast(tokenizer.tokenize(prompts), tf.int32)
    lengths = tf.cast(ragged.row_lengths(), tf.int32)
    # An empty row reads the eos column appended here: it becomes [eos].
    dense = tf.concat(
        [ragged.to_tensor(default_value=eos), tf.fill([tf.shape(prompts)[0], 1], eos)], axis=1
    )
    lengths = tf.maximum(lengths, 1)
    kept = tf.minimum(lengths, max_length - max_new)
    width = tf.reduce_max(kept)
    column = tf.range(width)[tf.newaxis, :]
    pad = width - kept
    # Output column w of row i holds the row's token lengths_i - (width - w).
    source = lengths[:, tf.newaxis] - (width - column)
    ids = tf.gather(dense, tf.maximum(source, 0), batch_dims=1)
    return tf.where(column >= pad[:, tf.newaxis], ids, eos), pad


def _rows_fn(model: keras.Model, tokenizer: AnyTokenizer):
    """`(prompts, max_new, samplers, temperature, top_k, top_p, seeds) -> (texts, counts)`.

    Every input but `prompts` is one value per row. The whole batch decodes
    together (`tfllm.inference.row_decode`); row i's text is the one
    `tfllm-generate` gives for it alone with seed i (the same Philox stream,
    the pair `[seed, 0]`).
    """
    max_length = int(model.max_length)
    eos = int(tokenizer.eos_id)

    def complete(prompts, max_new, samplers, temperature, top_k, top_p, seeds):
        max_new = tf.clip_by_value(max_new, 1, max_length - 1)
        ids, pad = _fitted_rows(tokenizer, prompts, max_new, max_length)
        seed_pairs = tf.stack([tf.cast(seeds, tf.int64), tf.zeros_like(seeds, tf.int64)], axis=1)
        settings = RowSettings(samplers, temperature, top_k, top_p, seed_pairs, max_new)
        new = generate_rows(model, ids, pad, settings, eos)
        kept = tf.ragged.boolean_mask(new, tf.not_equal(new, eos))
        return tokenizer.detokenize(kept), tf.cast(kept.row_lengths(), tf.int32)

    return complete


def _rows(prompts: tf.Tensor, value, dtype) -> tf.Tensor:
    """One scalar setting repeated for every prompt."""
    return tf.fill([tf.shape(prompts)[0]], tf.cast(value, dtype))


def _checked_row_args(samplers, max_new_tokens, temperature, top_k, top_p, where="") -> list:
    """Assert ops for `check_sampler_args`' rules on per-row settings, inside the
    graph a server runs.

    A serving client is not the CLI: an infinite or negative temperature or a
    top_p of 0 would otherwise sample garbage without a word, so the
    signature fails with InvalidArgumentError naming the input (TF Serving
    answers it as a 400). `where` names the endpoint in the top_k message.
    """
    top_k_rows = tf.equal(samplers, SAMPLERS.index("top_k"))
    return [
        tf.debugging.assert_equal(
            tf.reduce_all(max_new_tokens > 0), True, message="max_new_tokens must be >= 1"
        ),
        tf.debugging.assert_equal(
            tf.reduce_all(tf.math.is_finite(temperature) & (temperature > 0.0)),
            True,
            message="temperature must be > 0 and finite",
        ),
        tf.debugging.assert_equal(tf.reduce_all(top_k >= 0), True, message="top_k must be >= 0"),
        tf.debugging.assert_equal(
            tf.reduce_all(tf.logical_not(top_k_rows) | (top_k >= 1)),
            True,
            message=f"top_k must be >= 1 for {where or 'sampler top_k'}",
        ),
        tf.debugging.assert_equal(
            tf.reduce_all((top_p > 0.0) & (top_p <= 1.0)), True, message="top_p must be in (0, 1]"
        ),
    ]


def _generate_endpoint(complete, sampler: str):
    """`generate_<sampler>`: one setting for the whole batch (a closure per
    sampler, not a default arg: default args would become part of the exported
    signature)."""

    def generate(prompts, max_new_tokens, temperature, top_k, top_p, seed):
        samplers = _rows(prompts, SAMPLERS.index(sampler), tf.int32)
        checks = _checked_row_args(
            samplers[:1], max_new_tokens, temperature, top_k, top_p, f"generate_{sampler}"
        )
        with tf.control_dependencies(checks):
            prompts = tf.identity(prompts)
        texts, _ = complete(
            prompts,
            _rows(prompts, max_new_tokens, tf.int32),
            samplers,
            _rows(prompts, temperature, tf.float32),
            _rows(prompts, top_k, tf.int32),
            _rows(prompts, top_p, tf.float32),
            _rows(prompts, seed, tf.int32),
        )
        return {"completions": texts}

    return generate


def _per_row_endpoint(complete):
    """`generate`: every setting per row, so unrelated requests share one batch
    (TF Serving's row format: every input has the batch dimension)."""
    names = tf.constant(list(SAMPLERS))

    def generate(prompts, max_new_tokens, sampler, temperature, top_k, top_p, seed):
        matches = tf.equal(sampler[:, tf.newaxis], names[tf.newaxis, :])
        known = tf.debugging.assert_equal(
            tf.reduce_all(tf.reduce_any(matches, axis=1)),
            True,
            message=f"sampler must be one of {', '.join(SAMPLERS)}",
        )
        samplers = tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32)
        checks = [known] + _checked_row_args(samplers, max_new_tokens, temperature, top_k, top_p)
        with tf.control_dependencies(checks):
            prompts = tf.identity(prompts)
        texts, counts = complete(prompts, max_new_tokens, samplers, temperature, top_k, top_p, seed)
        return {"completions": texts, "num_tokens": counts}

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
    complete = _rows_fn(model, tokenizer)

    def serving_default(prompts):
        texts, _ = complete(
            prompts,
            _rows(prompts, int(max_new_tokens), tf.int32),
            _rows(prompts, SAMPLERS.index("greedy"), tf.int32),
            _rows(prompts, 1.0, tf.float32),
            _rows(prompts, 0, tf.int32),
            _rows(prompts, 1.0, tf.float32),
            _rows(prompts, 0, tf.int32),
        )
        return {"completions": texts}

    archive.add_endpoint("serving_default", serving_default, input_signature=[prompts_spec])

    archive.add_endpoint(
        "score",
        _score_endpoint(model, tokenizer),
        input_signature=[tf.TensorSpec([None], tf.string, name="texts")],
    )

    def settings(rows: bool) -> list[tf.TensorSpec]:
        """The sampling inputs: scalars for `generate_<sampler>`, one per prompt
        (and a sampler name) for `generate`."""
        fields = [("max_new_tokens", tf.int32), ("sampler", tf.string),
                  ("temperature", tf.float32), ("top_k", tf.int32), ("top_p", tf.float32),
                  ("seed", tf.int32)]  # fmt: skip
        shape = [None] if rows else []
        return [tf.TensorSpec(shape, dtype, name=name) for name, dtype in fields
                if rows or name != "sampler"]  # fmt: skip

    for sampler in SAMPLERS:
        archive.add_endpoint(
            f"generate_{sampler}",
            _generate_endpoint(complete, sampler),
            input_signature=[prompts_spec, *settings(rows=False)],
        )
    per_row = [prompts_spec, *settings(rows=True)]
    archive.add_endpoint("generate", _per_row_endpoint(complete), input_signature=per_row)
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
