"""Backends: the libraries fuzzkv drives (transformers, TransformerLens, torchtune), one file per implementation.

- :mod:`.interface`: the ``Backend`` and ``Lane`` interfaces, ``Capabilities``, ``Trace``;
  the only backend module the runner, replay, oracles and diagnosis import.
- :mod:`.loader`: ``load_lanes``, which picks and builds the implementations a run asks for.
- :mod:`.hf`, :mod:`.tl`, :mod:`.tl_legacy`, :mod:`.tune`: the implementations; :mod:`.hf_loading` resolves
  ``--model`` offline.
- :mod:`.hf_paths`, :mod:`.tl_paths`, :mod:`.tl_legacy_paths`, :mod:`.tt_paths`: the path code itself,
  standalone, which :mod:`.repro` embeds verbatim in every reproduction script.
- :mod:`.lanes`: one backend, or a pair for the ``cross`` oracle.
"""
