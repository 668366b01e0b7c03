"""Evaluation: statistics, log-likelihood by AIS (loglik), metrics, contacts (stage), and the
score and mutations stages (score, mutations; their shared helpers in scoring, the alignment
of sequences to the model's columns in profile_hmm)."""
