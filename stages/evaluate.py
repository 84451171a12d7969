"""evaluate: every subset's retrained models (one per seed) on the test set and every control
set, in one process; metrics.json gives each spec's metrics as mean and standard deviation over
the seeds."""

import hydra

from datamap.evaluation.evaluate import evaluate_subsets
from datamap.models.factories import targets_of
from datamap.pipeline.stage import stage
from datamap.selection.specs import selected_spec_names


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    evaluate_subsets({spec: inputs.retrained_models(spec) for spec in selected_spec_names(cfg)},
                     inputs.prepared, outputs.eval,
                     batch_size=int(cfg.data.datamodule.eval_batch_size),
                     trusted=sorted(targets_of(cfg.model)))


if __name__ == "__main__":
    main()
