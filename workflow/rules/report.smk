# The report rule lands with its stage.
