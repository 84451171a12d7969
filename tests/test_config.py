"""conf/ composes, params.yaml is its fresh composition, and every group option builds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from datamap.config import compose, params_text, stale_params, write_params
from datamap.io import ConfigError

from .helpers import ROOT, compose_cfg


def test_params_yaml_is_fresh():
    # Fails whenever conf/ is edited without `datamap compose` (see README).
    assert stale_params(ROOT / "params.yaml", ROOT / "conf") is None


def test_compose_matches_dvc_composition(tmp_path):
    """`datamap compose` and `dvc exp run` (hydra.enabled) must write identical bytes."""
    from dvc.utils.hydra import compose_and_dump

    dvc_out = tmp_path / "dvc_params.yaml"
    compose_and_dump(dvc_out, str(ROOT / "conf"), None, "config", str(tmp_path), ["seed=7"])
    ours = tmp_path / "ours.yaml"
    write_params(ours, ROOT / "conf", ["seed=7"])
    assert ours.read_bytes() == dvc_out.read_bytes()


def test_stale_params_detected(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    params = tmp_path / "params.yaml"
    write_params(params, conf)
    assert stale_params(params, conf) is None
    (conf / "trainer" / "default.yaml").write_text(
        (conf / "trainer" / "default.yaml").read_text().replace("max_epochs: 20", "max_epochs: 21")
    )
    message = stale_params(params, conf)
    assert message is not None and "datamap compose" in message


def test_no_hydra_interpolations_in_conf():
    # DVC composes without a HydraConfig, so ${hydra:...} would break `dvc exp run`.
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert "${hydra:" not in path.read_text(), path


def test_unknown_override_is_a_config_error():
    with pytest.raises(ConfigError):
        compose(ROOT / "conf", overrides=["model=does_not_exist"])


@pytest.mark.parametrize("group", sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir()))
def test_every_group_option_composes(group):
    for option in sorted((ROOT / "conf" / group).glob("*.yaml")):
        overrides = [f"{group}={option.stem}"]
        if group == "data" and option.stem == "table":
            overrides.append("data.source.train=somewhere.csv")
        if group == "data" and option.stem == "image_folder":
            overrides.append("data.source.root=somewhere")
        cfg = compose(ROOT / "conf", overrides=overrides)
        assert cfg.seed is not None


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_models_instantiate_and_run(model):
    import torch

    cfg = compose_cfg(f"model={model}")
    net = instantiate(cfg.model, input_shape=[1, 8, 8], num_classes=10)
    logits = net(torch.zeros(4, 1, 8, 8))
    assert logits.shape == (4, 10)
    optimizer = net.configure_optimizers()
    assert optimizer is not None


def test_trainer_and_callbacks_instantiate(tmp_path):
    from datamap.training import instantiate_group

    cfg = compose_cfg()
    callbacks = instantiate_group(cfg.callbacks, "callbacks", dirpath=str(tmp_path / "ckpt"))
    loggers = instantiate_group(cfg.logger, "logger", save_dir=str(tmp_path / "logs"))
    assert callbacks[0].dirpath == str(tmp_path / "ckpt")
    assert Path(loggers[0].log_dir) == tmp_path / "logs"
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_epochs == 3


def test_group_entry_without_target_is_refused():
    from datamap.training import instantiate_group

    with pytest.raises(ConfigError, match="logger.broken needs a _target_"):
        instantiate_group({"broken": {"save_dir": "x"}}, "logger")


def test_params_text_is_resolved():
    cfg = compose(ROOT / "conf", overrides=["model=cnn", "trainer.max_epochs=7"])
    assert "T_max: 7" in params_text(cfg)
