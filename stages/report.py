"""report: one comparison over every spec -- summary.md, metrics.json, comparison.png and the
fraction curves (fraction_curves.csv, a DVC plot, and fraction_curves.png)."""

import hydra
from omegaconf import OmegaConf

from datamap.pipeline.stage import stage
from datamap.report.comparison import write_report
from datamap.selection.specs import selected_spec_names


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    write_report(inputs, outputs.report, selected_spec_names(cfg),
                 definitions=OmegaConf.to_container(cfg.selection.all_specs, resolve=True),
                 baseline=cfg.selection.get("baseline"))


if __name__ == "__main__":
    main()
