"""The train and retrain steps: fitting a classifier from config (both stages share it), the
persistent checkpoint directory that makes resume possible, and the metrics of a model."""
