"""TransformerLens: 4.x's ``TransformerBridge`` (:mod:`.bridge`, driven by the HF path code through the adapters of
:mod:`.bridge_paths`) and 2.x/3.x's ``HookedTransformer`` (:mod:`.hooked`, :mod:`.hooked_paths`), and their scripts
(:mod:`.scripts`).

Importing this package imports nothing else: TransformerLens is an extra (``fuzzkv[tl]``)."""
