"""torchtune: its model converted from the HF one by torchtune's own builders and converters (:mod:`.backend`), its
path code (:mod:`.paths`: caches set up per case, masks and positions from torchtune's helpers) and its scripts
(:mod:`.scripts`).

Importing this package imports nothing else: torchtune is an extra (``fuzzkv[torchtune]``)."""
