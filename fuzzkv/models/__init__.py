"""Building the model under test, offline: :mod:`.loading` resolves ``--model`` (a registry name or model type
built with seeded random weights, a local folder, a GGUF file, the local HF cache, a factory or an object);
:mod:`.shrink` makes any architecture's config tiny (one layer of each kind kept); :mod:`.catalogue` lists every
``model_type`` of the installed transformers; :mod:`.offline` puts the Hub client offline, once, explicitly."""
