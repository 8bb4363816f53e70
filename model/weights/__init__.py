"""Weights: official checkpoint keys to ours (``convert``), safe loading and model folders
(``checkpoint``), and weight-memory estimates (``memory``)."""
