"""evaluate@SPEC: one retrained model on the test set and every control set."""

import hydra

from datamap.evaluation import evaluate
from datamap.models.checkpoint import load_model
from datamap.stage import selected_specs, stage


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    for spec in selected_specs(cfg):
        checkpoint = inputs.retrain(spec) / "model.ckpt"
        evaluate(load_model(checkpoint), inputs.prepared, outputs.eval(spec),
                 batch_size=int(cfg.data.datamodule.eval_batch_size), model_name=str(checkpoint))


if __name__ == "__main__":
    main()
