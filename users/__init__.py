"""Locust's side of a run: the options and the Plan they name, the tier user classes, the run (slots, ledger sync,
recorder) registered on the Environment, and the web UI tab."""
