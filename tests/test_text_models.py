"""The text backbones: n-gram hashing, the bag-of-n-grams model, RowAdagrad, the HF encoder."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from datamap.models.text import NgramHasher, RowAdagrad, TextBagOfNgrams

from .helpers import write_tiny_transformer


def bags(hasher, texts):
    ids, offsets = hasher(texts)
    ends = [*offsets[1:], len(ids)]
    return [set(ids[a:b].tolist()) for a, b in zip(offsets, ends, strict=True)]


def test_hasher_bags_words_and_character_ngrams():
    words_only = NgramHasher(word_ngrams=(1, 1), char_ngrams=None, buckets=2**20)
    a, b, empty = bags(words_only, ["the cat sat", "Sat THE dog!", "   "])
    assert len(a) == 3 and len(a & b) == 2 and empty == set()  # "the", "sat"; case folded
    # "!" is a token of its own; bigrams need both words in the same text
    full = NgramHasher(word_ngrams=(1, 2), char_ngrams=(3, 3), buckets=2**20)
    first, second = bags(full, ["the cat", "cat the"])
    assert len(first) == len(second) and first != second  # bigrams differ with word order
    # an unseen inflection shares character n-grams ("<fi", "fil", "ilm") with the seen word
    film, films, other = bags(NgramHasher(word_ngrams=None, char_ngrams=(3, 3)),
                              ["film", "films", "boat"])
    assert len(film & films) == 3 and not film & other


def test_hasher_is_the_same_in_another_process():
    texts = ["A sentence, with punctuation!", "ünïcode wörds", ""]
    here = NgramHasher()(texts)
    code = ("import sys; from datamap.models.text import NgramHasher; "
            f"ids, off = NgramHasher()({texts!r}); sys.stdout.write(repr((ids.tolist(), "
            "off.tolist())))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert eval(there) == (here[0].tolist(), here[1].tolist())


def test_bag_model_reads_raw_or_encoded_batches_and_pairs():
    torch.manual_seed(0)
    single = TextBagOfNgrams(input_shape=[1], num_classes=3, hidden=8)
    batch = {"text": ["a good film", "a bad one"], "label": torch.tensor([0, 1])}
    encoded = single.batch_encoder()(batch)
    assert "text" not in encoded and encoded["offsets"].tolist()[0] == 0
    assert torch.equal(single(batch), single(encoded)) and single(batch).shape == (2, 3)
    pair = TextBagOfNgrams(input_shape=[2], num_classes=3, pair="bags")
    both = {"text": ["a man sleeps", "a man sleeps"], "text_pair": ["he rests", "he runs"]}
    logits = pair(both)
    assert logits.shape == (2, 3) and not torch.equal(logits[0], logits[1])
    joined = TextBagOfNgrams(input_shape=[2], num_classes=3, pair="separator")
    assert "ngrams_pair" not in joined.batch_encoder()(both)


def test_row_adagrad_matches_adagrad_on_dense_and_rowwise_on_sparse():
    torch.manual_seed(0)
    dense = torch.randn(4, 3, requires_grad=True)
    reference = dense.detach().clone().requires_grad_(True)
    ours, torchs = RowAdagrad([dense], lr=0.3), torch.optim.Adagrad([reference], lr=0.3)
    for _ in range(3):
        for param, opt in ((dense, ours), (reference, torchs)):
            opt.zero_grad()
            (param ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(dense, reference)

    table = torch.nn.Embedding(5, 2, sparse=True)
    start = table.weight.detach().clone()
    opt = RowAdagrad(table.parameters(), lr=0.5)
    (table(torch.tensor([1, 3])) * torch.tensor([[1.0, 3.0], [2.0, 2.0]])).sum().backward()
    opt.step()
    # row r moves by -lr * g / sqrt(mean(g^2)); rows not in the batch do not move
    expected = start.clone()
    for row, grad in ((1, torch.tensor([1.0, 3.0])), (3, torch.tensor([2.0, 2.0]))):
        expected[row] -= 0.5 * grad / grad.square().mean().sqrt()
    torch.testing.assert_close(table.weight.detach(), expected)


def test_hf_encoder_passes_pairs_as_two_sequences(tmp_path):
    from datamap.models.hf import HFTransformer

    model = HFTransformer(input_shape=[2], num_classes=3,
                          pretrained=str(write_tiny_transformer(tmp_path / "bert")),
                          max_length=12)
    batch = {"id": torch.tensor([4, 5]), "label": torch.tensor([0, 2]),
             "text": ["the film was good", "bad"], "text_pair": ["great", "the plot was poor"]}
    encoded = model.batch_encoder()(batch)
    types = encoded["tokens.token_type_ids"]
    assert types.shape[1] <= 12 and (types[0] == 1).any() and (types[1] == 1).any()
    assert torch.equal(encoded["id"], batch["id"]) and "text" not in encoded
    assert model(encoded).shape == (2, 3)
    assert model.training  # built for fine-tuning: dropout on, so compare in eval mode
    model.eval()
    assert np.array_equal(model(batch).detach().numpy(), model(encoded).detach().numpy())


def test_hf_encoder_tokenises_each_example_once_and_pads_as_the_tokenizer_does(tmp_path):
    # the second epoch takes every example's tokens from the cache; the padded tensors equal
    # tokenising the batch afresh, whatever the batch's mix of cached and new examples
    from datamap.models.hf import HFTransformer

    model = HFTransformer(input_shape=[2], num_classes=3,
                          pretrained=str(write_tiny_transformer(tmp_path / "bert")),
                          max_length=8)
    texts = ["the film was good and the plot was great", "bad", "the plot was poor", "good"]
    pairs = ["great", "the plot was poor and bad", "good", "the film"]
    encoder = model.batch_encoder()

    def batch(rows):
        return {"id": torch.tensor(rows), "label": torch.zeros(len(rows), dtype=torch.long),
                "text": [texts[r] for r in rows], "text_pair": [pairs[r] for r in rows]}

    for rows in ([0, 1], [2, 3], [3, 0, 1], [1, 2, 0, 3]):
        got = encoder(batch(rows))
        fresh = model.tokenizer([texts[r] for r in rows], [pairs[r] for r in rows],
                                padding=True, truncation=True, max_length=8, return_tensors="pt")
        assert {k for k in got if k.startswith("tokens.")} == {f"tokens.{k}" for k in fresh}
        for key, value in fresh.items():
            assert torch.equal(got[f"tokens.{key}"], value), key
    assert encoder.tokenised == 4  # each example once, over four batches


@pytest.mark.parametrize("word_ngrams", [[0, 2], [3, 1], [1]])
def test_bad_ngram_ranges_are_config_errors(word_ngrams):
    from datamap.errors import ConfigError

    with pytest.raises(ConfigError, match="model.net.word_ngrams"):
        NgramHasher(word_ngrams=word_ngrams)


# ------------------------------------------------------------------------------------------------
# train mode: every backbone trains with dropout on and records eval_pass dynamics with it off


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows
        self.ids = np.array([row["id"] for row in rows], dtype=np.int64)  # the recorder checks

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def _backbone(name, tmp_path):
    """(net partial, optimizer partial, input_shape, rows) for one backbone on 24 examples."""
    from functools import partial

    from datamap.models import MLP, SmallCNN

    from .helpers import sentiment_frame

    generator = torch.Generator().manual_seed(0)
    if name in ("mlp", "cnn"):
        net = partial(MLP, hidden=[16], dropout=0.5) if name == "mlp" else partial(
            SmallCNN, channels=[4, 8], dropout=0.5)
        x = torch.rand(24, 1, 8, 8, generator=generator)
        rows = [{"id": i, "label": i % 2, "x": x[i]} for i in range(24)]
        return net, partial(torch.optim.AdamW, lr=1e-3), (1, 8, 8), rows
    frame = sentiment_frame(24)
    rows = [{"id": i, "label": int(label == "positive"), "text": text}
            for i, (text, label) in enumerate(zip(frame.sentence, frame.label, strict=True))]
    if name == "text_bow":
        net = partial(TextBagOfNgrams, hidden=8, dropout=0.5, sparse=False)
    else:
        from datamap.models.hf import HFTransformer

        net = partial(HFTransformer, pretrained=str(write_tiny_transformer(tmp_path / "bert")),
                      max_length=16)
    return net, partial(torch.optim.AdamW, lr=1e-3), (1,), rows


class _ModeProbe:
    """Wraps a classifier's ``training_step`` and ``predict_step``: the train/eval flag of every
    module with dropout or batch norm at each call."""

    STOCHASTIC = (torch.nn.Dropout, torch.nn.modules.batchnorm._BatchNorm)

    def __init__(self, model):
        self.train_modes, self.predict_modes = [], []
        original_train, original_predict = model.training_step, model.predict_step

        def flags():
            found = [m.training for m in model.modules() if isinstance(m, self.STOCHASTIC)]
            assert found, "the backbone has no dropout or batch norm to check"
            return found

        def training_step(*args, **kwargs):
            self.train_modes.append(flags())
            return original_train(*args, **kwargs)

        def predict_step(*args, **kwargs):
            self.predict_modes.append(flags())
            return original_predict(*args, **kwargs)

        model.training_step, model.predict_step = training_step, predict_step


@pytest.mark.parametrize("name", ["mlp", "cnn", "text_bow", "hf"])
def test_every_backbone_trains_in_train_mode_and_records_in_eval_mode(name, tmp_path):
    import pytorch_lightning as pl

    from datamap.data.datamodule import BatchCollator
    from datamap.dynamics import DynamicsRecorder, read_dynamics
    from datamap.models import Classifier

    net, optimizer, shape, rows = _backbone(name, tmp_path)
    pl.seed_everything(0, verbose=False)
    model = Classifier(net=net, optimizer=optimizer, input_shape=shape, num_classes=2)
    probe = _ModeProbe(model)
    collate = BatchCollator(model.batch_encoder())
    loader = torch.utils.data.DataLoader(_ListDataset(rows), batch_size=8, collate_fn=(
        lambda items: collate(torch.utils.data.default_collate(items))))
    recorder = DynamicsRecorder(tmp_path / "out", mode="eval_pass", splits=("train",))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=loader)
    assert len(probe.train_modes) == 2 * 3 and all(all(m) for m in probe.train_modes)
    assert len(probe.predict_modes) == 2 * 3 and not any(any(m) for m in probe.predict_modes)
    assert all(m.training for m in model.modules())  # back in train mode after the eval passes
    assert read_dynamics(tmp_path / "out" / "dynamics.parquet").num_rows == 2 * 24
