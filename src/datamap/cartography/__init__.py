"""The cartography step: scores, regions and noise detection turned into the data map (PNG and
the interactive page), the summary and the review queue (:func:`run_cartography`)."""
