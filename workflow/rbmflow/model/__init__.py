"""The Potts-Bernoulli RBM: energies and the Gibbs kernel (`rbm`), exact partition functions,
effective couplings, hidden units, and the HDF5 archive shared with the `rbms` package."""
