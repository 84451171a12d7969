"""train: fit the classifier on the prepared train split while recording training dynamics."""

import hydra

from datamap.stage import stage
from datamap.training import fit_classifier


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    fit_classifier(cfg, prepared_dir=inputs.prepared, out_dir=outputs.train, record_dynamics=True)


if __name__ == "__main__":
    main()
