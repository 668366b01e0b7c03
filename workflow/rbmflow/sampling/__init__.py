"""Markov chains: tempering, mixing diagnostics, the training's equilibrium monitor, and the
sample stage."""
