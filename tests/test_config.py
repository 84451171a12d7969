"""conf/ composes, params.yaml is its fresh composition, and every group option builds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from datamap.errors import ConfigError
from datamap.pipeline.config import compose, params_text, stale_params, write_params

from .helpers import ROOT


def test_params_yaml_is_fresh():
    # Fails whenever conf/ is edited without `datamap compose` (see docs/configuration.md).
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
    epochs = conf / "trainer" / "epochs" / "mlp.yaml"  # the default model's epochs
    epochs.write_text(epochs.read_text().replace("max_epochs: 20", "max_epochs: 21"))
    message = stale_params(params, conf)
    assert message is not None and "datamap compose" in message


def test_no_hydra_interpolations_in_conf():
    # DVC composes without a HydraConfig, so ${hydra:...} would break `dvc exp run`.
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert "${hydra:" not in path.read_text(), path


def test_unknown_override_is_a_config_error():
    with pytest.raises(ConfigError):
        compose(ROOT / "conf", overrides=["model=does_not_exist"])


def config_options() -> list[tuple[str, str]]:
    """(group, option) of every option file under conf/ (nested groups as ``data/datamodule``)."""
    conf = ROOT / "conf"
    return sorted((path.parent.relative_to(conf).as_posix(), path.stem)
                  for path in conf.rglob("*.yaml") if path.parent != conf)


def option_inputs(group: str, option: str, tmp_path: Path) -> list[str]:
    """Overrides that give an option what it needs to build: real files for the own-data
    sources, a tiny local transformer for model=hf, a CPU for the trainers."""
    from .helpers import sentiment_frame, write_image_folder, write_tiny_transformer

    if (group, option) == ("data", "table"):
        sentiment_frame(120).to_csv(tmp_path / "train.csv", index=False)
        return [f"data.source.train={tmp_path / 'train.csv'}",
                "data.source.text_columns=[sentence]"]
    if (group, option) == ("data", "image_folder"):
        write_image_folder(tmp_path / "images", per_class=20)
        return [f"data.source.root={tmp_path / 'images'}", "data.source.mode=L"]
    if (group, option) == ("model", "hf"):
        folder = write_tiny_transformer(tmp_path / "bert")
        return [f"model.net.pretrained={folder}", "model.net.local_files_only=true",
                "model.net.max_length=16", f"model.net.token_cache={tmp_path / 'tokens'}"]
    return []


def prepared_for(model: str, tmp_path: Path, digits_prepared: Path) -> Path:
    """Prepared data a model option reads: digits images, or generated sentences for text."""
    from datamap.data import TableSource
    from datamap.data.prepare import prepare

    if model not in ("text_bow", "hf"):
        return digits_prepared
    from .helpers import sentiment_frame

    sentiment_frame(120).to_csv(tmp_path / "text.csv", index=False)
    source = TableSource(train=str(tmp_path / "text.csv"), text_columns=["sentence"])
    prepare(source.load(), tmp_path / "text", val=0.2, test=0.2, label_noise=0.0, seed=0)
    return tmp_path / "text"


@pytest.mark.parametrize(("group", "option"), config_options())
def test_every_option_instantiates(group, option, tmp_path, digits_prepared, monkeypatch):
    """Not only composed: every option builds what it configures and that object works, as
    lightning-hydra-template's config tests do (a config option that composes but cannot be
    instantiated is what broke the own-data command once)."""
    import torch

    from datamap.training.fit import build_loggers, build_trainer, instantiate_group

    if group.startswith("hydra/"):
        return check_hydra_option(group, option)
    # the option as written (compose_cfg would pin the trainer to the CPU)
    cfg = compose(ROOT / "conf", overrides=["trainer.max_epochs=3", f"{group}={option}",
                                            *option_inputs(group, option, tmp_path)])
    top = group.split("/")[0]
    if group == "data":
        from datamap.data.prepare import prepare_from_config
        from datamap.data.splits import eval_splits

        prepare_from_config(cfg.data, tmp_path / "prepared", seed=cfg.seed)
        assert (tmp_path / "prepared" / "train.parquet").is_file()
        assert "test" in eval_splits(tmp_path / "prepared")
    elif group in ("data/datamodule", "model"):
        prepared = prepared_for(option if top == "model" else "mlp", tmp_path, digits_prepared)
        datamodule = instantiate(cfg.data.datamodule, prepared_dir=str(prepared), seed=0)
        model = instantiate(cfg.model, input_shape=list(datamodule.input_shape),
                            num_classes=datamodule.num_classes, input_kind=datamodule.input_kind)
        datamodule.setup("fit")
        if top == "model":  # the encoder the backbone asks for
            datamodule.encoder = model.batch_encoder()
        batch = next(iter(datamodule.val_dataloader()))
        with torch.inference_mode():
            logits = model(batch)
        assert logits.shape == (len(batch["label"]), datamodule.num_classes)
        assert model.configure_optimizers() is not None
    elif top in ("trainer", "experiment"):
        if option == "gpu" and not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="trainer=default"):
                build_trainer(cfg.trainer)
        else:
            assert build_trainer(cfg.trainer).max_epochs == cfg.trainer.max_epochs
    elif top == "dynamics":
        recorder = instantiate(cfg.dynamics, dirpath=str(tmp_path), seed=0)
        assert recorder.mode == cfg.dynamics.mode
    elif top == "callbacks":
        callbacks = instantiate_group(cfg.callbacks, "callbacks", dirpath=str(tmp_path))
        assert len(callbacks) == len([c for c in cfg.callbacks.values() if c is not None])
    elif top == "logger":
        monkeypatch.chdir(tmp_path)  # local stores (./mlruns, ./wandb) land in the test's dir
        loggers = build_loggers(cfg.logger, tmp_path)
        assert len(loggers) == len(cfg.logger)
    elif top == "cartography":
        from datamap.cartography.page import html_options
        from datamap.scoring.regions import region_spec

        region_spec(cfg.cartography.regions)
        html_options(cfg.cartography.get("html"))
    elif top == "selection":
        from datamap.selection.ranking import parse_spec

        for name, spec in cfg.selection.specs.items():
            parse_spec(name, dict(spec))
    else:
        raise AssertionError(f"conf/{group}/{option}.yaml: no check for this group; add one")


def check_hydra_option(group: str, option: str) -> None:
    """A Hydra setting of ``stages.subset`` (the launchers): composed with ``conf/subset.yaml``
    and its launcher built (nothing is launched)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = hydra_compose("subset", overrides=[f"{group}={option}"], return_hydra_config=True)
    assert group == "hydra/launcher", f"conf/{group}/{option}.yaml: no check for this group"
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ in {"JoblibLauncher", "SlurmLauncher"}, launcher


def test_group_entry_without_target_is_refused():
    from datamap.training.fit import instantiate_group

    with pytest.raises(ConfigError, match="logger.broken needs a _target_"):
        instantiate_group({"broken": {"save_dir": "x"}}, "logger")


def test_params_text_is_resolved():
    cfg = compose(ROOT / "conf", overrides=["model=cnn", "trainer.max_epochs=7"])
    assert "T_max: 7" in params_text(cfg)


def test_saved_experiment_composes_to_what_its_overrides_compose_to(tmp_path):
    from datamap.pipeline.config import save_experiment

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    overrides = ["data=table", "model=text_bow", "data.source.train=a b.csv",
                 "data.source.text_columns=[sentence]", "trainer.max_epochs=3", "+note=x:y"]
    path = save_experiment("mine", overrides, conf)
    assert path == conf / "experiment" / "mine.yaml"
    assert params_text(compose(conf, overrides=["experiment=mine"])) == \
        params_text(compose(conf, overrides=overrides))
    with pytest.raises(ConfigError, match="mine.yaml exists"):
        save_experiment("mine", overrides, conf)
    with pytest.raises(ConfigError, match="a saved experiment holds plain values"):
        save_experiment("sweep", ["trainer.max_epochs=1,2"], conf)
    with pytest.raises(ConfigError, match="letters, digits"):
        save_experiment("../x", overrides, conf)
    assert sorted(p.name for p in (conf / "experiment").iterdir()) == ["mine.yaml", "tiny.yaml"]
