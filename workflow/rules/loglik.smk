# The loglik rule lands with its stage.
