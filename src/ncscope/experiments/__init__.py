"""Experiments: end-to-end jobs built from data, models, collapse, attacks and train."""
