# The train rule lands with its stage.
