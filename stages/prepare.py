"""prepare: raw source -> data/prepared/{train,val,test,control}.parquet + meta.json."""

import hydra
from hydra.utils import instantiate

from datamap.data.prepare import prepare
from datamap.stage import stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    source = instantiate(cfg.data.source)
    control = instantiate(cfg.data.control)
    prepare(
        source.load(),
        outputs.prepared,
        val=cfg.data.split.val,
        test=cfg.data.split.test,
        label_noise=cfg.data.label_noise,
        control=control,
        seed=cfg.seed,
    )


if __name__ == "__main__":
    main()
