"""transformers: the HF backend (:mod:`.backend`), its path code (:mod:`.paths`, standalone: torch and
transformers only, embedded verbatim in every reproduction script) and its scripts (:mod:`.scripts`).

Importing this package imports nothing else, so a path module can be read without loading the backend."""
