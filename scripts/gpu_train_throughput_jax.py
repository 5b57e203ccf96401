"""GPT-2 124M training throughput and MFU on one GPU: Keras 3 + keras-hub, JAX backend.

Why a separate script and not `tfllm-benchmark`: the GPU machine this was
measured on has JAX with CUDA 13 but no TensorFlow, no network, and takes at
most 64 MiB of files per call, while TensorFlow with its CUDA 12 libraries is
over 2 GB. Keras 3 runs the same model code on JAX, and XLA compiles the
whole step either way, so this measures what our architecture's layers (the
keras-hub `TransformerDecoder` blocks, `ReversibleEmbedding` tied head and
`PositionEmbedding` that `tfllm.models.gpt` is built from, here assembled by
keras-hub's `GPT2Backbone`) reach under bf16 + XLA on that GPU. It is not a
timing of tfllm's TensorFlow trainer.

`--attention=is_causal` (the default) runs keras-hub's block sublayers with
`ops.dot_product_attention(is_causal=True)`; `keras_hub` calls the blocks,
which pass an explicit causal mask. Same weights and logits (checked on CPU);
on an H100 the causal flag let cuDNN skip the masked half of the attention
tiles (docs/benchmarks.md; that run's output was not kept).

The step is Keras' documented JAX pattern: `model.stateless_call` under
`jax.value_and_grad`, `optimizer.stateless_apply`, the whole step in one
`jax.jit` with its state donated. AdamW with global-norm clipping 1.0, as
`configs/gpt_small.py` trains. MFU counts 6N + 12·L·d·T FLOPs per token (N:
parameters without the learned position embedding), the formula
`tfllm.models.gpt.GPT.flops_per_token` and `tfllm-benchmark` use, against a
matmul peak measured in the same run in the compute dtype (and, for bf16,
the H100 SXM datasheet's 989 TFLOP/s dense bf16, for reference).

    python scripts/gpu_train_throughput_jax.py --batch_sizes=16,24 --output=gpt2.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402

H100_SXM_DENSE_BF16_TFLOPS = 989.0


def measure_peak_tflops(
    dtype: str = "bfloat16",
    size: int = 8192,
    warmup: int = 10,
    rounds: int = 7,
    per_round: int = 20,
) -> float:
    """TFLOP/s of a size³ matmul in `dtype`: the same-run ceiling MFU is taken against.

    Each round queues `per_round` products and waits once, so the host's
    per-call dispatch is hidden as it is in a training loop; median of rounds.
    """
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (size, size), dtype=dtype)
    b = jax.random.normal(key_b, (size, size), dtype=dtype)
    matmul = jax.jit(jnp.matmul)
    for _ in range(warmup):
        matmul(a, b).block_until_ready()
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            product = matmul(a, b)
        product.block_until_ready()
        seconds.append((time.perf_counter() - start) / per_round)
    return 2 * size**3 / statistics.median(seconds) / 1e12


def causal_block(block: keras_hub.layers.TransformerDecoder, x, training: bool):
    """`block(x)` with attention as `ops.dot_product_attention(is_causal=True)`.

    The same sublayers and weights (as `tfllm.models.gpt.cached_block` uses
    them), but without keras-hub's explicit [B, T, T] causal mask: given a
    mask, cuDNN's fused attention computes every query-key block; told the
    attention is causal, it skips the blocks above the diagonal.
    """
    attention = block._self_attention_layer
    h = block._self_attention_layer_norm(x)
    query = attention._query_dense(h)  # [B, T, H, Dh]
    key = attention._key_dense(h)
    value = attention._value_dense(h)
    attended = keras.ops.dot_product_attention(
        query, key, value, scale=attention._key_dim**-0.5, is_causal=True
    )
    x = x + block._self_attention_dropout(attention._output_dense(attended), training=training)
    h = block._feedforward_layer_norm(x)
    h = block._feedforward_output_dense(block._feedforward_intermediate_dense(h))
    return x + block._feedforward_dropout(h, training=training)


class CausalLM(keras.Model):
    """GPT2Backbone + tied head (`token_embedding(x, reverse=True)`).

    `attention="keras_hub"` calls the backbone as is (its blocks pass an
    explicit causal mask); `"is_causal"` runs the same layers through
    `causal_block`. Logits are float32 as tfllm's GPT returns them;
    `logits_dtype="bfloat16"` leaves them in the compute dtype, only to
    measure what the float32 logits and loss over the vocabulary cost.
    """

    def __init__(
        self,
        backbone: keras_hub.models.GPT2Backbone,
        logits_dtype: str = "float32",
        attention: str = "keras_hub",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self.logits_dtype = logits_dtype
        self.attention = attention

    def call(self, token_ids, training=False):
        backbone = self.backbone
        if self.attention == "keras_hub":
            x = backbone(
                {"token_ids": token_ids, "padding_mask": keras.ops.ones_like(token_ids)},
                training=training,
            )
        else:
            tokens = backbone.token_embedding(token_ids)
            x = backbone.embeddings_add((tokens, backbone.position_embedding(tokens)))
            x = backbone.embeddings_dropout(x, training=training)
            for block in backbone.transformer_layers:
                x = causal_block(block, x, training)
            x = backbone.layer_norm(x)
        logits = backbone.token_embedding(x, reverse=True)
        return keras.ops.cast(logits, self.logits_dtype)


def build(args: argparse.Namespace) -> CausalLM:
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=args.vocab_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim,
        dropout=args.dropout,
        max_sequence_length=args.seq_len,
    )
    return CausalLM(backbone, args.logits_dtype, args.attention)


def flops_per_token(model: CausalLM, args: argparse.Namespace) -> float:
    """6N + 12·L·d·T, N without the learned position embedding (it does no matmul)."""
    positions = args.seq_len * args.hidden_dim
    n = model.count_params() - positions
    return 6 * n + 12 * args.num_layers * args.hidden_dim * args.seq_len


def time_training(args: argparse.Namespace, batch_size: int, peak_tflops: float) -> dict:
    """Compiles one training step, runs `warmup` steps, then times `steps` of them."""
    keras.config.set_dtype_policy(args.precision)
    model = build(args)
    model.build((batch_size, args.seq_len))
    optimizer = keras.optimizers.AdamW(learning_rate=6e-4, weight_decay=0.1, global_clipnorm=1.0)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def compute_loss(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits), non_trainable

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    def train_step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    # One fixed batch: the input pipeline is not what is measured.
    key_x, key_y = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.randint(key_x, (batch_size, args.seq_len), 0, args.vocab_size, jnp.int32)
    y = jax.random.randint(key_y, (batch_size, args.seq_len), 0, args.vocab_size, jnp.int32)

    start = time.perf_counter()
    step = jax.jit(train_step, donate_argnums=0).lower(state, x, y).compile()
    hlo = step.as_text()
    loss, state = step(state, x, y)
    first_loss = float(loss)
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        loss, state = step(state, x, y)
    loss.block_until_ready()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss, state = step(state, x, y)
        loss.block_until_ready()
        seconds.append(time.perf_counter() - start)
    if args.trace_dir:
        # A few more steps under the profiler (XPlane, with the GPU kernels' times).
        with jax.profiler.trace(os.path.join(args.trace_dir, f"batch{batch_size}")):
            for _ in range(3):
                loss, state = step(state, x, y)
            loss.block_until_ready()
    median = statistics.median(seconds)
    tokens = batch_size * args.seq_len
    fpt = flops_per_token(model, args)
    achieved_tflops = tokens / median * fpt / 1e12
    memory = jax.devices()[0].memory_stats() or {}
    return {
        "batch_size": batch_size,
        "tokens_per_step": tokens,
        "compile_and_first_step_s": compile_s,
        "step_time_median_s": median,
        "step_time_min_s": min(seconds),
        "step_time_max_s": max(seconds),
        "train_tokens_per_second": tokens / median,
        "flops_per_token": fpt,
        "num_params": model.count_params(),
        "achieved_tflops": achieved_tflops,
        "mfu": achieved_tflops / peak_tflops,
        "mfu_vs_h100_sxm_datasheet": achieved_tflops / H100_SXM_DENSE_BF16_TFLOPS,
        "loss_first_step": first_loss,
        "loss_last_step": float(loss),
        "peak_bytes_in_use": memory.get("peak_bytes_in_use"),
        # cuDNN fused attention calls in the compiled step (0: XLA's own attention).
        "cudnn_fused_attention_calls": hlo.count("__cudnn$fmha"),
        "compute_dtype": model.compute_dtype,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", default="24", help="comma-separated")
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--vocab_size", type=int, default=50257)
    parser.add_argument("--num_layers", type=int, default=12)
    parser.add_argument("--num_heads", type=int, default=12)
    parser.add_argument("--hidden_dim", type=int, default=768)
    parser.add_argument("--intermediate_dim", type=int, default=3072)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument(
        "--precision",
        default="mixed_bfloat16",
        choices=["mixed_bfloat16", "float32"],
        help="Keras dtype policy; the peak is measured in its compute dtype",
    )
    parser.add_argument(
        "--flash_attention",
        action="store_true",
        help="keras.config.enable_flash_attention() (cuDNN's fused attention)",
    )
    parser.add_argument(
        "--logits_dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="float32 as tfllm trains; bfloat16 only to measure what that costs",
    )
    parser.add_argument(
        "--attention",
        default="is_causal",
        choices=["keras_hub", "is_causal"],
        help="keras-hub's blocks (explicit causal mask) or the same layers with is_causal=True",
    )
    parser.add_argument("--trace_dir", default="", help="also profile 3 steps there")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--output", default="gpu_train_throughput.json")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch_sizes: expected comma-separated integers, got {args.batch_sizes!r}")
    if min(args.batch_sizes) < 1 or args.steps < 1:
        parser.error("--batch_sizes and --steps must be positive")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.flash_attention:
        keras.config.enable_flash_attention()
    device = jax.devices()[0]
    peak_dtype = keras.DTypePolicy(args.precision).compute_dtype
    peak = measure_peak_tflops(peak_dtype)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "versions": {
            "jax": jax.__version__,
            "keras": keras.__version__,
            "keras_hub": keras_hub.__version__,
        },
        "keras_backend": keras.backend.backend(),
        "precision": args.precision,
        "logits_dtype": args.logits_dtype,
        "attention": args.attention,
        "flash_attention": args.flash_attention,
        "peak_matmul_dtype": peak_dtype,
        "peak_matmul_tflops": peak,
        "model": {
            k: getattr(args, k)
            for k in (
                "vocab_size",
                "seq_len",
                "num_layers",
                "num_heads",
                "hidden_dim",
                "intermediate_dim",
                "dropout",
            )
        },
        "runs": [],
    }
    for batch_size in args.batch_sizes:
        try:
            run = time_training(args, batch_size, peak)
        except Exception as error:  # e.g. out of GPU memory: recorded, the sweep goes on
            run = {"batch_size": batch_size, "error": f"{type(error).__name__}: {error}"[:2000]}
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.output)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
    failed = [run["batch_size"] for run in result["runs"] if "error" in run]
    if failed:
        sys.exit(
            f"gpu_train_throughput_jax: batch sizes {failed} failed (see 'error' in {args.output})"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
