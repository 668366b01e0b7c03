# The sample rule lands with its stage.
