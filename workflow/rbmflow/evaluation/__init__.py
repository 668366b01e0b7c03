"""Evaluation: statistics, log-likelihood by AIS, metrics, contacts, and the scoring of
sequences and mutations."""
