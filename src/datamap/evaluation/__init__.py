"""The evaluate step: every subset's retrained models on the test set and each control set."""
