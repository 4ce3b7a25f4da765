"""Training: learning a separable task, head-only freezing, resumption, a ViT from scratch."""

from __future__ import annotations


import jax
import numpy as np
import pytest

import apex_jax
from apex_jax import data, training
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder


@pytest.fixture(scope="module")
def text_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    folder = tiny_bert_folder(root / "bert", resolve("minilm"))
    ds = data.load_dataset(str(sentiment_csv(root / "task.csv", 200)))
    return folder, data.split_dataset(ds, seed=0)


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_full_finetuning_learns_separable_task(text_task):
    folder, splits = text_task
    model = apex_jax.load(folder)
    before = training.evaluate(model, model.params, splits["test"])["accuracy"]
    cfg = training.TrainConfig(learning_rate=1e-2, max_epochs=16, patience=5, batch_size=16)
    trained, history = training.train(model, splits["train"], splits["val"], cfg, log=lambda s: None)
    after = training.evaluate(trained, trained.params, splits["test"])["accuracy"]
    assert after >= 0.95, (before, after, history)
    assert before < 0.8
    # early stopping: it stops `patience` epochs after the best one and returns the best
    epochs = history["epochs"]
    assert len(epochs) == history["best_epoch"] + 6 < 16
    assert history["best_val_accuracy"] == max(e["val_accuracy"] for e in epochs) >= 0.95


def test_head_only_leaves_encoder_untouched(text_task):
    folder, splits = text_task
    model = apex_jax.load(folder)
    cfg = training.TrainConfig(mode="head", max_epochs=1, batch_size=16)
    trained, _ = training.train(model, splits["train"], splits["val"], cfg, log=lambda s: None)
    body = lambda p: {k: v for k, v in p.items() if k != "head"}
    assert _leaves_equal(body(model.params), body(trained.params))
    assert not _leaves_equal(model.params["head"], trained.params["head"])


def test_killed_training_resumes_to_identical_result(text_task, tmp_path):
    folder, splits = text_task
    model = apex_jax.load(folder)
    cfg = training.TrainConfig(learning_rate=1e-3, max_epochs=2, patience=2, batch_size=16)
    straight, h1 = training.train(model, splits["train"], splits["val"], cfg, log=lambda s: None)

    def die_in_epoch_2(msg):
        if msg.startswith("epoch 2/"):
            raise KeyboardInterrupt  # after epoch 1 was checkpointed, before epoch 2 is
    with pytest.raises(KeyboardInterrupt):
        training.train(model, splits["train"], splits["val"], cfg, out_dir=tmp_path, log=die_in_epoch_2)
    messages = []
    resumed, h2 = training.train(model, splits["train"], splits["val"], cfg, out_dir=tmp_path,
                                 log=messages.append)
    assert messages[0].startswith("resumed from epoch 1")
    assert _leaves_equal(straight.params, resumed.params)
    assert [e["val_accuracy"] for e in h1["epochs"]] == [e["val_accuracy"] for e in h2["epochs"]]


def test_vit_from_scratch_on_digits():
    from apex_jax.models.presets import VIT_PRESETS

    ds = data.load_dataset("digits")
    splits = data.split_dataset(ds, seed=0)
    hf = dict(model_type="vit", image_size=8, patch_size=2, num_channels=1, **VIT_PRESETS["vit-tiny"])
    model = apex_jax.create(hf, num_labels=10, seed=0)
    cfg = training.TrainConfig(max_epochs=10, patience=10, batch_size=64, learning_rate=3e-3)
    trained, history = training.train(model, splits["train"], splits["val"], cfg, log=lambda s: None)
    acc = training.evaluate(trained, trained.params, splits["test"])["accuracy"]
    assert acc > 0.75, history  # chance is 0.1; ~0.81 after 10 epochs


def test_bad_training_inputs(text_task):
    folder, splits = text_task
    with pytest.raises(ValueError, match="unknown training mode 'foo'"):
        training.train(apex_jax.load(folder), splits["train"], splits["val"],
                       training.TrainConfig(mode="foo"), log=lambda s: None)
    with pytest.raises(ValueError, match="no classification head"):
        training.train(apex_jax.load(resolve("minilm")), splits["train"], splits["val"], log=lambda s: None)
