"""The select step: selection specs (hand-written and swept), ranking by region or score,
mixtures, files of ids, and the subset files each spec writes."""
