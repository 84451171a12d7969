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
    assert np.array_equal(model(batch).detach().numpy(), model(encoded).detach().numpy())


@pytest.mark.parametrize("word_ngrams", [[0, 2], [3, 1], [1]])
def test_bad_ngram_ranges_are_config_errors(word_ngrams):
    from datamap.errors import ConfigError

    with pytest.raises(ConfigError, match="model.net.word_ngrams"):
        NgramHasher(word_ngrams=word_ngrams)
