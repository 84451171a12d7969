"""model=hf's token store: each split tokenised once for every fit on it, never read for other
inputs, never trusted when damaged or writable by another account."""

from __future__ import annotations

import logging
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from .helpers import sentiment_frame, write_tiny_transformer

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_transformer(tmp_path_factory.mktemp("bert") / "bert")


def _model(bert, store, max_length=16, pair=True):
    from datamap.models.hf import HFTransformer

    return HFTransformer(input_shape=[2] if pair else [1], num_classes=2, pretrained=str(bert),
                         max_length=max_length, token_cache=store)


def _split(n=80, seed=0):
    frame = sentiment_frame(n, seed=seed)
    ids = np.arange(100, 100 + n, dtype=np.int64)
    texts = frame.sentence.to_numpy(dtype=object)
    return ids, texts, texts[::-1].copy()


def _assert_batches_are_fresh_tokenisations(model, encoder, ids, texts, pairs):
    for rows in (np.arange(8), np.array([50, 3, 77, 12])):
        batch = {"id": torch.tensor(ids[rows]), "text": list(texts[rows]),
                 "text_pair": list(pairs[rows])}
        got = encoder(batch)
        fresh = model.tokenizer(list(texts[rows]), list(pairs[rows]), padding=True,
                                truncation=True, max_length=model.max_length,
                                return_tensors="pt")
        for key, value in fresh.items():
            assert torch.equal(got[f"tokens.{key}"], value), key


def _stored(store):
    return sorted(store.glob("*.parquet"))


def test_a_second_fit_reads_the_tokens_the_first_stored(tiny_bert, tmp_path):
    store = tmp_path / "work" / ".datamap" / "tokens"
    model = _model(tiny_bert, store)
    ids, texts, pairs = _split()
    first = model.batch_encoder()
    first.preload(ids, texts, pairs)
    assert first.tokenised == len(ids)
    assert len(_stored(store)) == 1
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700

    second = _model(tiny_bert, store).batch_encoder()  # a new process's model, same tokenizer
    second.preload(ids, texts, pairs)
    assert second.tokenised == 0 and second.checked == 32
    _assert_batches_are_fresh_tokenisations(model, second, ids, texts, pairs)
    assert second.tokenised == 0  # every batch padded from the stored tokens


def test_tokens_are_keyed_by_every_input_they_depend_on(tiny_bert, tmp_path):
    store = tmp_path / "tokens"
    ids, texts, pairs = _split()
    _model(tiny_bert, store).batch_encoder().preload(ids, texts, pairs)
    changed_text = texts.copy()
    changed_text[40] = changed_text[40] + " good"
    variants = [
        (_model(tiny_bert, store, max_length=12), ids, texts, pairs),  # truncation
        (_model(tiny_bert, store), ids + 1, texts, pairs),  # ids
        (_model(tiny_bert, store), ids, changed_text, pairs),  # one text
        (_model(tiny_bert, store, pair=False), ids, texts, None),  # single texts
    ]
    for k, (model, *split) in enumerate(variants, start=2):
        encoder = model.batch_encoder()
        encoder.preload(*split)
        assert encoder.tokenised == len(ids), k  # none of them reads another's file
        assert len(_stored(store)) == k
    other = write_tiny_transformer(tmp_path / "other-bert", hidden=48)  # same vocabulary
    encoder = _model(other, store).batch_encoder()
    encoder.preload(ids, texts, pairs)
    assert encoder.tokenised == 0  # the same tokenizer files: the same tokens
    from datamap.models.tokens import examples_digest

    # a boundary moved between two texts is another input, not the same bytes
    assert examples_digest(ids[:2], ["ab", "c"], None) != examples_digest(ids[:2], ["a", "bc"],
                                                                          None)


def test_a_damaged_or_unreadable_file_is_replaced_not_believed(tiny_bert, tmp_path, caplog):
    store = tmp_path / "tokens"
    model = _model(tiny_bert, store)
    ids, texts, pairs = _split()
    model.batch_encoder().preload(ids, texts, pairs)
    (path,) = _stored(store)
    table = pq.read_table(path)
    tokens = table.column("input_ids").to_pylist()
    tokens[1] = tokens[1][:-2] + [7, tokens[1][-1]]  # one token changed, key kept
    damaged = table.set_column(table.column_names.index("input_ids"), "input_ids",
                               pa.array(tokens, type=pa.list_(pa.int32())))
    pq.write_table(damaged.replace_schema_metadata(table.schema.metadata), path)
    with caplog.at_level(logging.WARNING, logger="datamap.models.hf"):
        encoder = model.batch_encoder()
        encoder.preload(ids, texts, pairs)
    assert encoder.tokenised == len(ids)
    assert "differ from tokenising it now" in caplog.text
    _assert_batches_are_fresh_tokenisations(model, encoder, ids, texts, pairs)
    assert pq.read_table(path).column("input_ids").to_pylist()[1] != tokens[1]  # replaced

    path.write_bytes(b"PAR1 not parquet")
    encoder = model.batch_encoder()
    encoder.preload(ids, texts, pairs)
    assert encoder.tokenised == len(ids)
    assert pq.read_table(path).num_rows == len(ids)


def test_a_store_another_account_could_write_is_never_used(tiny_bert, tmp_path, caplog):
    store = tmp_path / "tokens"
    store.mkdir(mode=0o700)
    store.chmod(0o777)  # e.g. made by someone else, or by a careless umask
    model = _model(tiny_bert, store)
    ids, texts, pairs = _split()
    with caplog.at_level(logging.WARNING, logger="datamap.models.tokens"):
        encoder = model.batch_encoder()
        encoder.preload(ids, texts, pairs)
    assert "not a private directory" in caplog.text
    assert encoder.tokenised == len(ids) and not _stored(store)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    encoder = _model(tiny_bert, link / "tokens").batch_encoder()
    encoder.preload(ids, texts, pairs)  # the parent is a link: not used, nothing made in it
    assert encoder.tokenised == len(ids) and not list((tmp_path / "elsewhere").iterdir())


def test_no_store_tokenises_once_per_fit(tiny_bert, tmp_path):
    model = _model(tiny_bert, None)
    ids, texts, pairs = _split()
    for _ in range(2):
        encoder = model.batch_encoder()
        encoder.preload(ids, texts, pairs)
        assert encoder.tokenised == len(ids)
        _assert_batches_are_fresh_tokenisations(model, encoder, ids, texts, pairs)
    assert not list(tmp_path.rglob("*.parquet"))
