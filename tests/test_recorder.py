"""The dynamics recorder on tiny data: rows, values, eval passes, held-out splits, refusals, and
its contract with LightningModules and DataModules -- tuple batches, loaders without a length,
non-finite logits, probabilities, batches without ids -- in process and through the real train
stage (one line on stderr, exit code 2, no dynamics file)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from datamap.data.datamodule import PreparedDataModule, collate_batch
from datamap.dynamics import DynamicsRecorder, batch_ids_labels, per_example_values, read_dynamics
from datamap.dynamics.distributed import merge_ranks
from datamap.errors import ConfigError, DataError
from datamap.models import MLP, Classifier

from . import dynamics_doubles as doubles
from .helpers import ROOT, assert_one_line_error, compose_cfg, subprocess_env

SPLITS = ("train", "val", "test")
FILES = {"train": "dynamics.parquet", "val": "dynamics_val.parquet",
         "test": "dynamics_test.parquet"}


def make_model(num_classes: int = 10, dropout: float = 0.0, cls=Classifier) -> Classifier:
    return cls(net=partial(MLP, hidden=[32], dropout=dropout),
               optimizer=partial(torch.optim.AdamW, lr=3e-3),
               input_shape=(1, 8, 8), num_classes=num_classes)


def fit(prepared, *, epochs=2, datamodule=None, callbacks=(), model=None, model_cls=Classifier,
        seed=0, **trainer_kw):
    """Fit a small MLP (``model``, else a ``model_cls`` initialised from ``seed``) on
    ``prepared`` with the given callbacks; returns (trainer, model)."""
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = datamodule or PreparedDataModule(prepared, batch_size=64, seed=seed)
    model = model or make_model(cls=model_cls)
    options = dict(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)
    options.update(trainer_kw)
    trainer = pl.Trainer(callbacks=list(callbacks), **options)
    trainer.fit(model, datamodule=datamodule)
    return trainer, model


def split_ids(prepared, name):
    return np.sort(pq.read_table(prepared / f"{name}.parquet", columns=["id"])
                   .column("id").to_numpy())


def record(prepared, out, *, mode="train_pass", splits=SPLITS, **fit_kw):
    """Fit two epochs with a recorder writing to ``out``; the files' bytes by split."""
    recorder = DynamicsRecorder(out, mode=mode, splits=splits, store_logits=True)
    fit(prepared, epochs=2, callbacks=[recorder], **fit_kw)
    return {split: (out / FILES[split]).read_bytes() for split in splits}


# ------------------------------------------------------------------------------------------------
# values


def test_train_pass_rows_ids_and_values(digits_prepared, tmp_path):
    recorder = DynamicsRecorder(tmp_path, store_logits=True, seed=3)
    fit(digits_prepared, epochs=3, callbacks=[recorder])
    table = read_dynamics(tmp_path / "dynamics.parquet")
    ids = split_ids(digits_prepared, "train")
    assert table.num_rows == len(ids) * 3
    frame = table.to_pandas()
    for epoch in range(3):
        rows = frame[frame.epoch == epoch]
        assert np.array_equal(rows.id.to_numpy(), ids)  # every id once, sorted
        assert (rows.record == 0).all()
    logits = np.stack(frame.logits.to_numpy()).astype(np.float32)
    ref = per_example_values(logits, frame.gold.to_numpy())
    for name, values in ref.items():
        np.testing.assert_allclose(frame[name].to_numpy(), values, atol=1e-5, err_msg=name)
    labels = dict(zip(*[pq.read_table(digits_prepared / "train.parquet").column(c).to_numpy()
                        for c in ("id", "label")], strict=True))
    assert (frame.gold.to_numpy() == np.array([labels[i] for i in frame.id])).all()
    meta = table.schema.metadata[b"datamap"].decode()
    assert '"mode": "train_pass"' in meta and '"seed": 3' in meta
    # the model learns: mean p_gold rises
    assert frame[frame.epoch == 2].p_gold.mean() > frame[frame.epoch == 0].p_gold.mean()


def test_float16_logits(digits_prepared, tmp_path):
    recorder = DynamicsRecorder(tmp_path, store_logits=True, logits_dtype="float16")
    fit(digits_prepared, epochs=1, callbacks=[recorder])
    table = pq.read_table(tmp_path / "dynamics.parquet")
    assert table.schema.field("logits").type == pa.list_(pa.float16(), 10)
    frame = table.to_pandas()
    logits = np.stack(frame.logits.to_numpy()).astype(np.float32)
    # values come from the float32 logits; the stored float16 ones are within half precision
    ref = per_example_values(logits, frame.gold.to_numpy())
    np.testing.assert_allclose(frame.margin.to_numpy(), ref["margin"], atol=2e-2)


# ------------------------------------------------------------------------------------------------
# eval pass


class ModeProbe(pl.Callback):
    """Records whether the model was in train mode at every training batch."""

    def __init__(self):
        self.modes = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.modes.append(all(m.training for m in pl_module.modules()))


def test_eval_pass_records_per_epoch(digits_prepared, tmp_path):
    probe = ModeProbe()
    recorder = DynamicsRecorder(tmp_path, mode="eval_pass", records_per_epoch=2)
    _, model = fit(digits_prepared, epochs=2, callbacks=[recorder, probe],
                   model=make_model(dropout=0.5))
    table = read_dynamics(tmp_path / "dynamics.parquet")
    frame = table.to_pandas()
    ids = split_ids(digits_prepared, "train")
    assert table.num_rows == len(ids) * 2 * 2
    assert sorted(set(zip(frame.epoch, frame.record, strict=True))) == [(0, 0), (0, 1), (1, 0),
                                                                        (1, 1)]
    assert '"records_per_epoch": 2' in table.schema.metadata[b"datamap"].decode()
    # train mode restored after every eval pass (the first of each epoch runs mid-epoch)
    assert probe.modes and all(probe.modes)
    assert model.training
    # the last record is an eval-mode pass of the final weights (dropout off): recompute it
    last = frame[(frame.epoch == 1) & (frame.record == 1)]
    data = pq.read_table(digits_prepared / "train.parquet").to_pandas().set_index("id").loc[ids]
    x = torch.tensor(np.stack(data.x.to_numpy()), dtype=torch.float32).reshape(-1, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        logits = model(x).numpy()
    ref = per_example_values(logits, data.label.to_numpy())
    np.testing.assert_allclose(last.p_gold.to_numpy(), ref["p_gold"], atol=1e-5)
    mid = frame[(frame.epoch == 1) & (frame.record == 0)]
    assert not np.allclose(mid.p_gold.to_numpy(), last.p_gold.to_numpy())


def test_eval_pass_leaves_training_untouched(digits_prepared, tmp_path):
    """Eval passes draw no randomness from the training stream: same weights as train_pass."""
    weights = []
    for mode, records in (("train_pass", 1), ("eval_pass", 3)):
        recorder = DynamicsRecorder(tmp_path / mode, mode=mode, records_per_epoch=records)
        _, model = fit(digits_prepared, epochs=2, callbacks=[recorder],
                       model=make_model(dropout=0.3))
        weights.append(model.state_dict())
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_too_many_records_refused(digits_prepared, tmp_path):
    recorder = DynamicsRecorder(tmp_path, mode="eval_pass", records_per_epoch=500)
    with pytest.raises(ConfigError, match="records_per_epoch"):
        fit(digits_prepared, epochs=1, callbacks=[recorder])


# ------------------------------------------------------------------------------------------------
# held-out splits


def test_heldout_val_and_test(digits_prepared, tmp_path):
    recorder = DynamicsRecorder(tmp_path, splits=["train", "val", "test"])
    # sanity-check and mid-epoch validation runs must not be recorded (16 batches: validation
    # after batches 8 and 16)
    module = PreparedDataModule(digits_prepared, batch_size=73, eval_batch_size=100)
    fit(digits_prepared, epochs=2, datamodule=module, callbacks=[recorder],
        num_sanity_val_steps=2, val_check_interval=0.5)
    for split in ("val", "test"):
        path = tmp_path / f"dynamics_{split}.parquet"
        ids = split_ids(digits_prepared, split)
        table = read_dynamics(path, expected_ids=ids)
        assert table.num_rows == len(ids) * 2
        meta = table.schema.metadata[b"datamap"].decode()
        assert f'"split": "{split}"' in meta and '"mode": "eval_pass"' in meta
    train = read_dynamics(tmp_path / "dynamics.parquet")
    assert train.num_rows == len(split_ids(digits_prepared, "train")) * 2


def test_val_split_needs_validation_at_every_epoch_end(digits_prepared, tmp_path):
    recorder = DynamicsRecorder(tmp_path, splits=["train", "val"])
    with pytest.raises(ConfigError, match="check_val_every_n_epoch"):
        fit(digits_prepared, epochs=2, callbacks=[recorder], check_val_every_n_epoch=2)
    recorder = DynamicsRecorder(tmp_path, splits=["train", "val"])
    with pytest.raises(ConfigError, match="val_check_interval"):  # 19 batches: val after 9, 18
        fit(digits_prepared, epochs=2, callbacks=[recorder], val_check_interval=0.5)


def test_unknown_split_refused():
    with pytest.raises(ConfigError, match="splits"):
        DynamicsRecorder(splits=["val"])
    with pytest.raises(ConfigError, match="splits"):
        DynamicsRecorder(splits=["train", "control"])


# ------------------------------------------------------------------------------------------------
# refusals: configurations that would lose examples silently


class BatchCounter(pl.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, *args, **kwargs):
        self.batches += 1


class DropLastModule(PreparedDataModule):
    def train_dataloader(self):
        return DataLoader(self.split("train"), batch_size=self.batch_size, shuffle=True,
                          collate_fn=collate_batch, drop_last=True)


def test_drop_last_refused_before_training(digits_prepared, tmp_path):
    counter = BatchCounter()
    with pytest.raises(ConfigError, match="drop_last"):
        fit(digits_prepared, datamodule=DropLastModule(digits_prepared, batch_size=64),
            callbacks=[DynamicsRecorder(tmp_path), counter])
    assert counter.batches == 0
    assert not (tmp_path / "dynamics.parquet").exists()


@pytest.mark.parametrize("limit", [0.5, 3])
def test_limit_train_batches_refused(digits_prepared, tmp_path, limit):
    with pytest.raises(ConfigError, match="limit_train_batches"):
        fit(digits_prepared, callbacks=[DynamicsRecorder(tmp_path)], limit_train_batches=limit)


class ListSampler(Sampler[int]):
    def __init__(self, indices):
        self.indices = list(indices)

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


class SamplerModule(PreparedDataModule):
    """Trains with a fixed list of indices: repeats or skips some examples."""

    def __init__(self, *args, change, **kwargs):
        super().__init__(*args, **kwargs)
        self.change = change

    def train_dataloader(self):
        dataset = self.split("train")
        indices = list(range(len(dataset)))
        indices = indices + [7] if self.change == "repeat" else indices[:-3]
        return DataLoader(dataset, batch_size=self.batch_size, collate_fn=collate_batch,
                          sampler=ListSampler(indices))


@pytest.mark.parametrize("change, error", [("repeat", "more than once"), ("skip", "not seen")])
def test_sampler_repeating_or_skipping_refused(digits_prepared, tmp_path, change, error):
    module = SamplerModule(digits_prepared, batch_size=64, change=change)
    with pytest.raises(DataError, match=error):
        fit(digits_prepared, epochs=1, datamodule=module, callbacks=[DynamicsRecorder(tmp_path)])
    assert not (tmp_path / "dynamics.parquet").exists()


def test_train_pass_needs_logits_in_outputs(digits_prepared, tmp_path):
    class Plain(Classifier):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    model = Plain(net=partial(MLP, hidden=[8]), optimizer=partial(torch.optim.SGD, lr=0.1),
                  input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError, match="training_step must return"):
        fit(digits_prepared, epochs=1, model=model, callbacks=[DynamicsRecorder(tmp_path)])


def test_bad_recorder_config():
    with pytest.raises(ConfigError, match="records_per_epoch"):
        DynamicsRecorder(records_per_epoch=2)  # train_pass records once per epoch
    with pytest.raises(ConfigError, match="mode"):
        DynamicsRecorder(mode="other")
    with pytest.raises(ConfigError, match="logits_dtype"):
        DynamicsRecorder(logits_dtype="bfloat16")


# ------------------------------------------------------------------------------------------------
# merging ranks (the DDP gather's dedupe, on plain arrays)


def distributed_positions(n: int, world: int) -> list[list[int]]:
    """The dataset indices each rank gets from DistributedSampler(shuffle=False)."""
    sampler = [list(torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=r,
                                                        shuffle=False)) for r in range(world)]
    return sampler


@pytest.mark.parametrize("n, world", [(5, 2), (10, 4), (8, 2), (3, 4)])
def test_merge_ranks_drops_sampler_padding(n, world):
    ids = np.arange(100, 100 + n)
    per_rank = distributed_positions(n, world)
    columns = {"id": [], "value": []}
    positions = []
    for rank, indices in enumerate(per_rank):
        for j, index in enumerate(indices):
            columns["id"].append(ids[index])
            # the padding copy (global position >= n) gets a different value
            columns["value"].append(-1.0 if j * world + rank >= n else float(index))
            positions.append(j * world + rank)
    merged = merge_ranks({k: np.array(v) for k, v in columns.items()}, np.array(positions),
                         ids, world, "test")
    assert np.array_equal(merged["id"], ids)
    assert np.array_equal(merged["value"], np.arange(n, dtype=float))  # never the padding copy


def test_merge_ranks_refuses_repeats_and_gaps():
    ids = np.arange(6)
    with pytest.raises(DataError, match="more than once"):  # 6 % 2 == 0: no padding allowed
        merge_ranks({"id": np.array([0, 1, 2, 3, 4, 5, 0, 1])}, np.arange(8), ids, 2, "x")
    with pytest.raises(DataError, match="not seen"):
        merge_ranks({"id": np.array([0, 1, 2, 3, 4])}, np.arange(5), ids, 2, "x")
    with pytest.raises(DataError, match="more than once"):  # single process: none allowed
        merge_ranks({"id": np.array([0, 1, 2, 3, 4, 5, 5])}, np.arange(7), ids, 1, "x")
    with pytest.raises(DataError, match="not in the dataset"):
        merge_ranks({"id": np.array([0, 1, 2, 3, 4, 5, 9])}, np.arange(7), ids, 2, "x")


def test_ddp_trainer_config_composes():
    cfg = compose_cfg("trainer=ddp")
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
    cfg = compose_cfg("dynamics=eval_pass")
    assert cfg.dynamics.mode == "eval_pass" and cfg.dynamics._target_.endswith("DynamicsRecorder")


def test_chunked_reduction_gives_the_same_table(digits_prepared, tmp_path, monkeypatch):
    """Chunks reduced on the device and on the background thread (CPU) mid-epoch change
    nothing: tiny chunk sizes give the same bytes as one reduction per epoch."""
    import datamap.dynamics.accumulate as accumulate_module

    def record(name):
        recorder = DynamicsRecorder(tmp_path / name, store_logits=True,
                                    splits=["train", "val"])
        fit(digits_prepared, epochs=2, callbacks=[recorder])
        return {f: (tmp_path / name / f).read_bytes()
                for f in ("dynamics.parquet", "dynamics_val.parquet")}

    whole = record("whole")
    monkeypatch.setattr(accumulate_module, "BACKGROUND_ELEMENTS", 10 * 100)  # ~12 chunks/epoch
    monkeypatch.setattr(accumulate_module, "REDUCE_ELEMENTS", 10 * 150)  # val: on this thread
    assert record("chunked") == whole


def test_gather_rows_pads_chunks_and_keeps_bytes(monkeypatch):
    """The DDP gather, with a fake 2-rank all_gather: uneven lengths, several chunks, float16
    and int64 columns come back exactly."""
    import datamap.dynamics.distributed as distributed_module

    rng = np.random.default_rng(0)
    ranks = [torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float16)) for n in (11, 8)]
    ids = [torch.arange(n, dtype=torch.int64) + 100 * r for r, n in enumerate((11, 8))]
    monkeypatch.setattr(distributed_module, "GATHER_ELEMENTS", 12)  # 4 rows of 3 per call

    def fake_gather(columns):
        start = [0]

        def gather(trainer, tensor):
            rows = tensor.shape[0]
            out = []
            for col in columns:  # what every rank sends: its padded chunk, as bytes
                piece = col[start[0]:start[0] + rows]
                pad = torch.zeros((rows - len(piece), *col.shape[1:]), dtype=col.dtype)
                chunk = torch.cat([piece, pad]).reshape(rows, -1).contiguous()
                out.append(chunk.view(torch.uint8))
            start[0] += rows
            return torch.stack(out)
        return gather

    sizes = np.array([11, 8])
    for columns in (ranks, ids):
        monkeypatch.setattr(distributed_module, "_all_gather", fake_gather(columns))
        got = distributed_module._all_gather_rows(None, columns[0], sizes, torch.device("cpu"))
        for mine, theirs in zip(got, columns, strict=True):
            assert mine.dtype == theirs.numpy().dtype
            assert np.array_equal(mine, theirs.numpy())


# ------------------------------------------------------------------------------------------------
# batches


def test_batch_ids_labels_reads_dicts_and_triples():
    ids, labels = torch.arange(4), torch.tensor([1, 0, 1, 1])
    x = torch.zeros(4, 3)
    for batch in ({"x": x, "id": ids, "label": labels}, (x, labels, ids), [x, labels, ids]):
        got = batch_ids_labels(batch)
        assert got[0] is ids and got[1] is labels


@pytest.mark.parametrize("batch, fragment", [
    ((torch.zeros(4, 3), torch.arange(4)), "a tuple of 2"),
    ({"x": torch.zeros(4, 3), "label": torch.arange(4)}, "a dict with keys ['label', 'x']"),
    (torch.zeros(4, 3), "from a torch.float32 tensor of shape (4, 3)"),
    ((torch.zeros(4, 3), torch.arange(4), torch.zeros(4)), "ids are a torch.float32 tensor"),
    ((torch.zeros(4, 3), torch.arange(3), torch.arange(4)), "4 ids but 3 labels"),
])
def test_unreadable_batches_refused(batch, fragment):
    with pytest.raises(ConfigError, match="tuple/list \\(inputs, labels, ids\\)") as info:
        batch_ids_labels(batch)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mode", ["train_pass", "eval_pass"])
def test_tuple_batches_record_what_dict_batches_record(digits_prepared, tmp_path, mode):
    """(x, label, id) batches give the same bytes as dict batches, in every pass: training
    steps, validation steps and predict steps (eval passes over train and test)."""
    dicts = record(digits_prepared, tmp_path / "dict", mode=mode)
    tuples = record(digits_prepared, tmp_path / "tuple", mode=mode,
                    model_cls=doubles.TupleClassifier,
                    datamodule=doubles.TupleDataModule(digits_prepared, batch_size=64))
    assert tuples == dicts


def test_batch_without_ids_refused_at_the_first_batch(digits_prepared, tmp_path):
    module = doubles.TupleDataModule(digits_prepared, batch_size=64, with_ids=False)
    with pytest.raises(ConfigError, match="cannot read example ids and labels from a tuple of 2"):
        record(digits_prepared, tmp_path, model_cls=doubles.TupleClassifier,
               datamodule=module)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# logits that cannot be recorded


def test_non_finite_logits_refused_naming_the_examples(digits_prepared, tmp_path):
    ids = split_ids(digits_prepared, "train")
    bad = ids[ids % doubles.NAN_EVERY == 0]
    with pytest.raises(DataError) as info:
        record(digits_prepared, tmp_path, model_cls=doubles.NanLogitsClassifier)
    message = str(info.value)
    shown = ", ".join(str(i) for i in bad[:5])
    assert message.startswith(f"train dynamics, epoch 0: the model's logits are NaN or infinite "
                              f"for {len(bad)} example(s) (ids {shown}, ...)")
    assert "lower the learning rate" in message
    assert not list(tmp_path.iterdir())


def test_probabilities_refused(digits_prepared, tmp_path):
    with pytest.raises(ConfigError, match="predict_step returned probabilities .* raw, "
                                          "unnormalised scores"):
        record(digits_prepared, tmp_path, model_cls=doubles.ProbabilitiesClassifier,
               mode="eval_pass")
    assert not list(tmp_path.iterdir())


def test_logits_of_the_wrong_width_refused(digits_prepared, tmp_path):
    narrow = make_model()
    narrow.num_classes = 9
    with pytest.raises(ConfigError, match=r"logits of shape \(64, 10\) .* expected \[64, 9\]"):
        record(digits_prepared, tmp_path, model=narrow)


# ------------------------------------------------------------------------------------------------
# training loaders without a length


@pytest.mark.parametrize("mode", ["train_pass", "eval_pass"])
def test_iterable_training_loader_records_train_and_val(digits_prepared, tmp_path, mode):
    """The iterable loader yields what the sized one does, so both splits must come out the
    same bytes; validation runs after the last batch, which Lightning only knows on fetching."""
    iterable = doubles.IterableTrainDataModule(digits_prepared, batch_size=64)
    files = record(digits_prepared, tmp_path / "iterable", datamodule=iterable, mode=mode,
                   splits=("train", "val"))
    sized = record(digits_prepared, tmp_path / "sized", mode=mode, splits=("train", "val"),
                   datamodule=PreparedDataModule(digits_prepared, batch_size=64))
    assert files == sized
    for split in ("train", "val"):
        ids = split_ids(digits_prepared, split)
        table = read_dynamics(tmp_path / "iterable" / FILES[split], expected_ids=ids)
        assert table.num_rows == 2 * len(ids)


def test_iterable_loader_validating_mid_epoch_refused(digits_prepared, tmp_path):
    """With a batch-count val_check_interval that does not divide the epoch, the last batch
    gets no validation run: refused when the last batch shows it (19 batches, every 5)."""
    iterable = doubles.IterableTrainDataModule(digits_prepared, batch_size=64)
    with pytest.raises(ConfigError, match="does not run after the last of the 19 training"):
        record(digits_prepared, tmp_path, datamodule=iterable, splits=("train", "val"),
               val_check_interval=5)


def test_heldout_dirpath(digits_prepared, tmp_path):
    recorder = DynamicsRecorder(tmp_path / "train", splits=SPLITS,
                                heldout_dirpath=tmp_path / "train" / "heldout")
    fit(digits_prepared, epochs=1, callbacks=[recorder])
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["dynamics.parquet",
                                                                      "heldout"]
    assert sorted(p.name for p in (tmp_path / "train" / "heldout").iterdir()) == [
        "dynamics_test.parquet", "dynamics_val.parquet"]


# ------------------------------------------------------------------------------------------------
# the train stage


def train_stage(prepared, cwd, *overrides):
    """``python -m stages.train`` as dvc.yaml runs it (logging to stdout), on ``prepared``."""
    shutil.copytree(prepared, cwd / "data" / "prepared")
    # torch 2.13 deprecates a class Lightning 2.6 still builds (a FutureWarning on every run);
    # it is not ours to fix, and this test is about the stage's own stderr
    env = subprocess_env(PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore::FutureWarning")
    return subprocess.run(
        [sys.executable, "-m", "stages.train", "hydra.run.dir=.", "hydra.output_subdir=null",
         "hydra/job_logging=stdout", "hydra/hydra_logging=none", "trainer.max_epochs=1",
         "model.net.hidden=[16]", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("overrides, fragments", [
    (["model._target_=tests.dynamics_doubles.NanLogitsClassifier"],
     ["train dynamics, epoch 0", "NaN or infinite for 12 example(s) (ids 0, 100, 200,",
      "lower the learning rate"]),
    (["model._target_=tests.dynamics_doubles.ProbabilitiesClassifier", "dynamics=eval_pass"],
     ["predict_step returned probabilities", "return the raw, unnormalised scores"]),
    (["model._target_=tests.dynamics_doubles.TupleClassifier",
      "data.datamodule._target_=tests.dynamics_doubles.TupleDataModule",
      "+data.datamodule.with_ids=false"],
     ["cannot read example ids and labels from a tuple of 2", "(inputs, labels, ids)"]),
], ids=["nan-logits", "probabilities", "tuple-without-ids"])
def test_train_stage_refuses_in_one_line(digits_prepared, tmp_path, overrides, fragments):
    result = train_stage(digits_prepared, tmp_path, *overrides)
    assert_one_line_error(result, *fragments)
    assert not list(tmp_path.rglob("dynamics*.parquet"))
    assert not list(tmp_path.rglob("*.arrow"))  # no completed epoch's part either
    assert not (tmp_path / "data" / "train" / "model.ckpt").exists()
    np.testing.assert_equal(pq.read_table(tmp_path / "data" / "prepared" / "train.parquet")
                            .num_rows, len(split_ids(digits_prepared, "train")))


def test_records_per_epoch_in_train_pass_refused_naming_eval_pass(tmp_path):
    with pytest.raises(ConfigError, match=r"records_per_epoch=3 needs dynamics=eval_pass"):
        DynamicsRecorder(tmp_path, mode="train_pass", records_per_epoch=3)


def test_bf16_mixed_training_records_the_values_of_its_logits_exactly(digits_prepared, tmp_path):
    # trainer.precision=bf16-mixed: the model's logits are bfloat16; the recorder widens them
    # exactly, so every stored value is what the float32 algorithm gives for the stored logits
    # (the NumPy twin's exp may differ from torch's in the last bit: a few float32 ulps)
    import pyarrow.parquet as pq

    from datamap.dynamics.values import per_example_values
    from datamap.training.fit import fit_classifier

    from .helpers import compose_cfg

    cfg = compose_cfg("trainer.max_epochs=2", "trainer.precision=bf16-mixed",
                      "dynamics.store_logits=true")
    fit_classifier(cfg, prepared_dir=digits_prepared, out_dir=tmp_path / "train",
                   record_dynamics=True)
    table = pq.read_table(tmp_path / "train" / "dynamics.parquet")
    logits = np.stack(table.column("logits").to_numpy(zero_copy_only=False)).astype(np.float32)
    # bfloat16 values widened: the low 16 bits of every float32 are zero
    assert not (logits.view(np.uint32) & 0xFFFF).any()
    expected = per_example_values(logits, table.column("gold").to_numpy())
    assert np.array_equal(table.column("pred").to_numpy(), expected["pred"])
    for name in ("p_gold", "margin", "loss", "el2n"):
        np.testing.assert_allclose(table.column(name).to_numpy(), expected[name], rtol=1e-6,
                                   atol=1e-7, err_msg=name)
