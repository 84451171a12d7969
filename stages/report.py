"""report: one comparison table (metrics.json, summary.md, comparison.png) over every spec."""

import hydra

from datamap.report import write_report
from datamap.stage import selected_specs, stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    write_report(inputs, outputs.report, selected_specs(cfg))


if __name__ == "__main__":
    main()
