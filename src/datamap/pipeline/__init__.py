"""The glue around the steps: the stage wrapper every stage script uses, the composition of
``conf/`` into ``params.yaml``, the code dependencies of each stage in ``dvc.yaml``, and the
Hydra multirun of one subset end to end."""
