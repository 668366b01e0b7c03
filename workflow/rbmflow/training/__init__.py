"""Training by maximum likelihood: the train stage's loop and its checkpoints."""
