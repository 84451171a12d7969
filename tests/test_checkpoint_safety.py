"""Checkpoints hold no code: every checkpoint datamap writes loads with
``torch.load(weights_only=True)``, a planted one runs nothing, and a model is rebuilt only from
trusted classes (datamap's, torch's, or those the run's config names)."""

from __future__ import annotations

import functools
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from datamap.errors import ConfigError, DataError

from .helpers import compose_cfg

USER_PACKAGE = {
    "__init__.py": "from .nets import Net\n",
    "nets.py": textwrap.dedent("""\
        import math
        from torch import nn

        class Net(nn.Module):
            # a user's own backbone: re-exported, so its config name is userpkg.Net and its
            # class's own name userpkg.nets.Net
            def __init__(self, input_shape, num_classes, hidden=(16,), dropout=0.0):
                super().__init__()
                self.layers = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape),
                                                                    num_classes))

            def forward(self, x):
                return self.layers(x)
        """),
}


OVERRIDES = ["trainer.max_epochs=2", "model.net._target_=userpkg.Net",
             "data.datamodule.batch_size=128"]


class Planted:
    """Unpickling this creates ``marker``: the proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_prepared):
    """A train-stage fit of a user's own backbone (outside datamap) on the digits."""
    from datamap.training.fit import fit_classifier

    root = tmp_path_factory.mktemp("own-backbone")
    package = root / "site" / "userpkg"
    package.mkdir(parents=True)
    for name, text in USER_PACKAGE.items():
        (package / name).write_text(text)
    sys.path.insert(0, str(root / "site"))
    try:
        # the train stage's fit: every callback and logger, dynamics recorded
        fit_classifier(compose_cfg(*OVERRIDES), prepared_dir=digits_prepared,
                       out_dir=root / "train", record_dynamics=True,
                       checkpoint_dir=root / "checkpoints")
        yield root
    finally:
        sys.path.remove(str(root / "site"))


def test_every_checkpoint_written_holds_only_tensors_and_plain_values(trained):
    checkpoints = [trained / "train" / "model.ckpt", *sorted((trained / "checkpoints")
                                                            .glob("*.ckpt"))]
    assert len(checkpoints) >= 2  # model.ckpt and at least last.ckpt
    for path in checkpoints:
        state = torch.load(path, map_location="cpu", weights_only=True)
        described = state["hyper_parameters"]
        assert described["net"] == {"_target_": "userpkg.nets.Net", "_partial_": True,
                                    "hidden": [128], "dropout": 0.0}
        assert described["optimizer"]["_target_"] == "torch.optim.adamw.AdamW"
        assert described["class_names"] == [str(d) for d in range(10)]


def test_a_model_is_rebuilt_from_a_users_class_only_when_the_config_names_it(trained,
                                                                           digits_prepared):
    from datamap.models.checkpoint import load_model
    from datamap.training.metrics import split_metrics

    checkpoint = trained / "train" / "model.ckpt"
    sys.path.insert(0, str(trained / "site"))
    try:
        with pytest.raises(DataError, match=r"model\.net is userpkg\.nets\.Net, which is "
                                             r"neither datamap's nor torch's"):
            load_model(checkpoint)
        # the config's name (a re-export) or the class's own name
        for trusted in (["userpkg.Net"], ["userpkg.nets.Net"], ["userpkg"]):
            model = load_model(checkpoint, trusted)
            assert type(model.net).__module__ == "userpkg.nets" and not model.training
        # the weights are the saved ones: the metrics train wrote describe this model
        written = json.loads((trained / "train" / "metrics.json").read_text())["val"]
        assert split_metrics(model, digits_prepared, "val") == written
    finally:
        sys.path.remove(str(trained / "site"))


def test_a_planted_pickle_runs_nothing(tmp_path, trained, digits_prepared):
    from datamap.models.checkpoint import checkpoint_epoch, load_model
    from datamap.training.fit import fit_classifier

    marker = tmp_path / "ran"
    real = torch.load(trained / "train" / "model.ckpt", weights_only=True)
    planted = tmp_path / "model.ckpt"
    torch.save({**real, "hyper_parameters": {**real["hyper_parameters"],
                                             "net": Planted(marker)}}, planted)
    for load in (load_model, checkpoint_epoch):
        with pytest.raises(DataError, match="holds Python objects, not only tensors and plain "
                                            "values .* retrain it"):
            load(planted)
    assert not marker.exists()

    # as the train stage's last.ckpt, resumed from (the same run otherwise)
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(trained / "checkpoints", checkpoints)
    run = json.loads((checkpoints / "run.json").read_text())
    (checkpoints / "run.json").write_text(json.dumps({**run, "finished": False}))  # killed
    torch.save({**torch.load(checkpoints / "last.ckpt", weights_only=True),
                "planted": Planted(marker)}, checkpoints / "last.ckpt")
    sys.path.insert(0, str(trained / "site"))
    try:
        with pytest.raises(DataError, match="last.ckpt: holds Python objects"):
            fit_classifier(compose_cfg(*OVERRIDES), prepared_dir=digits_prepared,
                           out_dir=tmp_path / "train", record_dynamics=True,
                           checkpoint_dir=checkpoints, resume=True)
    finally:
        sys.path.remove(str(trained / "site"))
    assert not marker.exists() and not (tmp_path / "train").exists()


@pytest.mark.parametrize("target, refusal", [
    # never imported: not under a trusted module
    ("os.system", "model.net is os.system, which is neither datamap's nor torch's"),
    ("plantedpkg.Net", "model.net is plantedpkg.Net, which is neither"),
    # under a trusted module, but not a backbone class
    ("datamap.models.hf.os.system", "names datamap.models.hf.os.system, which is a "
                                    "builtin_function_or_method, not a torch.nn.Module"),
    ("datamap.models.checkpoint.save_model", "which is a function, not a torch.nn.Module"),
    ("datamap.models.nothing.Here", "which is nothing, not a torch.nn.Module"),
    ("torch.optim.AdamW", "which is a type, not a torch.nn.Module"),
])
def test_a_planted_description_names_only_trusted_classes(tmp_path, trained, target, refusal):
    from datamap.models.checkpoint import load_model

    site = tmp_path / "site"
    (site / "plantedpkg").mkdir(parents=True)
    marker = tmp_path / "imported"
    (site / "plantedpkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    real = torch.load(trained / "train" / "model.ckpt", weights_only=True)
    described = real["hyper_parameters"]
    planted = tmp_path / "model.ckpt"
    torch.save({**real, "hyper_parameters": {**described, "net": {
        **described["net"], "_target_": target}}}, planted)
    sys.path.insert(0, str(site))
    try:
        with pytest.raises(DataError) as refused:
            load_model(planted)
    finally:
        sys.path.remove(str(site))
    message = str(refused.value)
    assert message.startswith(f"{planted}: its model.net") and refusal in message
    assert "\n" not in message and not marker.exists()


def test_a_description_whose_weights_do_not_fit_is_refused(tmp_path, trained):
    from datamap.models.checkpoint import load_model

    real = torch.load(trained / "train" / "model.ckpt", weights_only=True)
    planted = tmp_path / "model.ckpt"
    torch.save({**real, "hyper_parameters": {**real["hyper_parameters"], "net": {
        "_target_": "datamap.models.MLP", "_partial_": True, "hidden": [8]}}}, planted)
    with pytest.raises(DataError, match="its weights do not fit the model it describes"):
        load_model(planted)


def test_a_built_in_model_round_trips_and_loads_with_lightning(tmp_path, digits_prepared):
    from datamap.models import MLP, Classifier
    from datamap.models.checkpoint import load_model, save_model

    model = Classifier(net=functools.partial(MLP, hidden=[8], dropout=0.1),
                       optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
                       scheduler=functools.partial(torch.optim.lr_scheduler.StepLR,
                                                   step_size=2),
                       input_shape=(1, 8, 8), num_classes=10,
                       class_names=[str(d) for d in range(10)])
    save_model(model, tmp_path / "model.ckpt")
    x = torch.randn(4, 1, 8, 8)
    for loaded in (load_model(tmp_path / "model.ckpt"),
                   Classifier.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)):
        loaded.eval()
        assert torch.equal(loaded(x), model.eval()(x))
        optimizer = loaded.configure_optimizers()["optimizer"]
        assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.9
        assert loaded.hparams["scheduler"] == {
            "_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 2}


@pytest.mark.parametrize("part, factory, refusal", [
    ("net", "not a factory", "is not a class or a partial of one"),
    ("net", object(), "is not a class or a partial of one"),
    ("optimizer", functools.partial(torch.optim.SGD, 0.1),
     "positional arguments cannot be described"),
    ("optimizer", functools.partial(torch.optim.SGD, lr=torch.tensor(0.1)),
     "model.optimizer.lr: a Tensor, which a checkpoint cannot hold as plain data"),
])
def test_a_model_part_that_is_not_plain_data_is_refused_when_built(part, factory, refusal):
    from datamap.models import MLP, Classifier

    parts = {"net": functools.partial(MLP, hidden=[8]),
             "optimizer": functools.partial(torch.optim.SGD, lr=0.1), part: factory}
    with pytest.raises(ConfigError, match=refusal):
        Classifier(**parts, input_shape=(1, 8, 8), num_classes=10)


def test_datamap_evaluate_trusts_only_what_it_is_told(trained, digits_prepared, capsys):
    from datamap.cli import main

    checkpoint = str(trained / "train" / "model.ckpt")
    sys.path.insert(0, str(trained / "site"))
    try:
        code = main(["evaluate", checkpoint, "--prepared", str(digits_prepared),
                     "--data", "test"])
        captured = capsys.readouterr()
        assert code != 0 and "userpkg.nets.Net" in captured.err and "--trust" in captured.err
        code = main(["evaluate", checkpoint, "--prepared", str(digits_prepared),
                     "--data", "test", "--trust", "userpkg.Net"])
        assert code == 0 and "test" in capsys.readouterr().out
    finally:
        sys.path.remove(str(trained / "site"))
