"""evaluate@SPEC: one retrained model on the test and control sets."""

import hydra

from datamap.evaluation import evaluate
from datamap.models.checkpoint import load_model
from datamap.stage import selected_specs, stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    for spec in selected_specs(cfg):
        model = load_model(inputs.retrain(spec) / "model.ckpt")
        evaluate(model, inputs.prepared, outputs.eval(spec))


if __name__ == "__main__":
    main()
