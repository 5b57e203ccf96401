"""A workdir's checkpoint restores EVERY model weight (none left at random init)."""

import keras
import numpy as np
import tensorflow as tf

from tfllm.inference.loading import load_trained


def test_checkpoint_restores_every_model_weight(trained_workdir):
    trained = load_trained(trained_workdir)
    model = trained.model
    for weight in model.weights:  # wipe, then restore: every weight must come back
        weight.assign(np.zeros(weight.shape, weight.dtype))
    tf.train.Checkpoint(model=model).restore(trained.checkpoint).expect_partial()
    missed = [w.path for w in model.weights if not np.any(w.numpy())]
    assert not missed, missed
    assert len(model.weights) == 2 + 2 + 16 * model.num_layers  # embeddings, final norm, blocks


def test_two_loads_with_different_seeds_are_identical(trained_workdir):
    logits = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)  # a weight missed by the restore would differ
        trained = load_trained(trained_workdir)
        ids = tf.constant([trained.tokenizer.encode("KING RICHARD:")], tf.int32)
        logits.append(trained.model(ids).numpy())
    np.testing.assert_array_equal(logits[0], logits[1])
