"""prepare: a source -> data/prepared/{train,val,test}.parquet, controls/, meta.json."""

import hydra

from datamap.data.prepare import prepare_from_config
from datamap.pipeline.stage import stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    prepare_from_config(cfg.data, outputs.prepared, seed=cfg.seed)


if __name__ == "__main__":
    main()
