"""Knowledge distillation: a student trained on its teacher's softened outputs.

Loss per position (LM) or per example (classifier), Hinton et al. 2015:

    α · CE(labels, student)  +  (1 − α) · T² · KL(softmax(teacher/T) ‖ softmax(student/T))

T² keeps the soft term's gradients on the scale of the hard term's as T
grows. Keras' own `sparse_categorical_crossentropy` and `kl_divergence` do the
arithmetic; the teacher runs frozen (inference mode) inside the same step.

With `student_embeddings="teacher"` the student's token table starts as a copy
of the teacher's (they read the same ids: the student uses the teacher's
tokenizer). A CNN student then starts from pretrained word vectors instead of
noise — Kim (2014)'s CNN-static vs CNN-rand, here with the teacher's own
vectors — so distillation has to teach it the task, not the vocabulary.

With `augment` (classifiers), a fraction of every training batch is replaced by
masked / n-gram-cut copies of its rows (tfllm.compress.augment). Their gold
labels may no longer hold ("not good" cut to "good"), so an augmented row's
loss is the soft term alone, at full weight: T² · KL.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfllm.compress.augment import AugmentSettings, RowFormat, augment_rows
from tfllm.data.classification_data import ends_with_sep
from tfllm.distribute.mesh import assign
from tfllm.errors import ConfigError
from tfllm.inference.loading import load_trained
from tfllm.training.plugins import TrainingPlugin


def distillation_loss(
    targets: tf.Tensor,
    student_logits: tf.Tensor,
    teacher_logits: tf.Tensor,
    temperature: float,
    alpha: float,
    soft_only: tf.Tensor | None = None,
) -> tf.Tensor:
    """The loss above for every position/example (the logits' leading axes); where
    `soft_only` (bool, the targets' shape) is true, T² · KL alone."""
    student_logits = tf.cast(student_logits, tf.float32)
    teacher_logits = tf.cast(teacher_logits, tf.float32)
    hard = keras.losses.sparse_categorical_crossentropy(targets, student_logits, from_logits=True)
    soft = keras.losses.kl_divergence(
        tf.nn.softmax(teacher_logits / temperature), tf.nn.softmax(student_logits / temperature)
    )
    loss = alpha * hard + (1.0 - alpha) * temperature**2 * soft
    if soft_only is None:
        return loss
    return tf.where(soft_only, temperature**2 * soft, loss)


class DistillationPlugin(TrainingPlugin):
    """Replaces the task loss with `distillation_loss` against a frozen teacher."""

    name = "distillation"

    def __init__(
        self,
        teacher_workdir: str,
        temperature: float,
        alpha: float,
        student_embeddings: str = "random",
        augment: AugmentSettings | None = None,
        seed: int = 0,
    ) -> None:
        self.teacher_workdir = teacher_workdir
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.student_embeddings = student_embeddings
        self.augment = augment if augment is not None and augment.rows > 0 else None
        self.seed = int(seed)
        self.teacher: keras.Model | None = None
        self._row_format: RowFormat | None = None
        self._step: tf.Variable | None = None

    def setup(self, model, optimizer):
        # Built inside the strategy scope, so the teacher is replicated like the student.
        trained = load_trained(self.teacher_workdir)
        self.teacher = trained.model
        self.teacher.trainable = False
        self._student_params = int(model.count_params())
        if self.augment is not None:  # a classifier teacher (tfllm.compress.run checks)
            tokenizer = trained.tokenizer
            self._row_format = RowFormat(
                mask_id=int(getattr(tokenizer, "mask_id", tokenizer.unk_id)),
                bos_id=int(tokenizer.bos_id),
                sep_id=int(tokenizer.eos_id) if ends_with_sep(tokenizer) else -1,
                pad_id=int(tokenizer.pad_id),
            )
            self._step = optimizer.iterations  # keys the stateless draws

    def initialize(self, model):
        teacher = int(self.teacher.count_params())
        student = int(model.count_params())
        copied = ""
        if self.student_embeddings == "teacher":
            source, target = token_table(self.teacher), token_table(model)
            if source is None or target is None or source.shape != target.shape:
                raise ConfigError(
                    "--student_embeddings=teacher: the student's token table "
                    f"{None if target is None else tuple(target.shape)} must have the teacher's "
                    f"shape {None if source is None else tuple(source.shape)} (set the student's "
                    "model.embedding_dim to the teacher's hidden width)"
                )
            assign(target, source.value)
            copied = "; token table copied from the teacher"
        if self.augment is not None:
            a = self.augment
            copied += (
                f"; {a.rows:.0%} of each batch augmented (pieces masked at {a.mask:g}, "
                f"cut to 1..{a.max_ngram}-grams at {a.ngram:g}; soft labels only)"
            )
        return (
            f"Distilling from {self.teacher_workdir} ({teacher:,} parameters) into a "
            f"{student:,}-parameter student ({teacher / student:.1f}× fewer); "
            f"T={self.temperature:g}, α={self.alpha:g}{copied}"
        )

    def per_example_loss(self, task, model, inputs, targets, training):
        del task
        weights = None
        if isinstance(targets, tuple | list):  # instruction data: (targets, response mask)
            targets, weights = targets
        soft_only = None
        if training and self.augment is not None:
            inputs, soft_only = augment_rows(inputs, self._seed(), self.augment, self._row_format)
        student = model(inputs, training=training)
        teacher = self.teacher(inputs, training=False)
        loss = distillation_loss(targets, student, teacher, self.temperature, self.alpha, soft_only)
        if weights is not None:  # per row, the mean over its response tokens (InstructionTask)
            weights = tf.cast(weights, loss.dtype)
            return tf.reduce_sum(loss * weights, -1) / tf.maximum(tf.reduce_sum(weights, -1), 1.0)
        if loss.shape.rank > 1:  # LM: [batch, positions] -> [batch]
            loss = tf.reduce_mean(loss, axis=list(range(1, loss.shape.rank)))
        return loss

    def _seed(self) -> tf.Tensor:
        """(run seed, replica, step): each replica and step draws its own rows."""
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        first = self.seed * 4096 + tf.cast(replica, tf.int64)
        return tf.stack([first, tf.cast(self._step, tf.int64)])

    def summary(self, model):
        return {
            "teacher_params": int(self.teacher.count_params()),
            "student_params": int(model.count_params()),
        }


def token_table(model: keras.Model) -> keras.Variable | None:
    """The `[vocab, width]` input embedding of a tfllm model (CNN/MLP/GPT-shaped ones hold
    `token_embedding`; BERT and Llama classifiers hold it in their encoder/decoder)."""
    for holder in (model, getattr(model, "encoder", None), getattr(model, "decoder", None)):
        layer = getattr(holder, "token_embedding", None)
        if layer is not None:
            return layer.embeddings
    return None
