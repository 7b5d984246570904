"""Backends: the libraries fuzzkv drives, one package per library.

- :mod:`.interface`: the ``Backend`` and ``Lane`` interfaces, ``Capabilities``, ``Trace``, ``ModelRequest``;
  the only backend module the runner, replay, oracles and diagnosis import.
- :mod:`.drivers`: the registered drivers (``--backend`` names and how each backend is built).
- :mod:`.loader`: ``load_lanes``, which builds the lanes a run asks for; :mod:`.lanes`: one backend, or a pair
  for the ``cross`` oracle.
- :mod:`.hf` (transformers), :mod:`.tl` (TransformerLens), :mod:`.tune` (torchtune): each library's backend, path
  code and reproduction scripts.
- Shared by them: :mod:`.driven` (a backend over a path module), :mod:`.precision` (the higher-precision twin),
  :mod:`.mutants` (the canaries' planted bugs), :mod:`.repro` (what every reproduction script is assembled from).

Building the model is :mod:`fuzzkv.models`'s.
"""
