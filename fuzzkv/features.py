"""Names of the backend features an oracle may need and a backend declares (a leaf: no imports)."""

STATIC_CACHE = "static-cache"  # a preallocated cache of fixed length
CACHE_RESET = "cache-reset"  # a cache can be reset and reused (the ``reused`` path)
CACHE_CONTENTS = "cache-contents"  # the cache's keys and values can be read back for diagnosis
PADDED_POSITIONS = "padded-positions"  # a left-padded row can be given its real positions, so it equals the row alone
BEAM_SEARCH = "beam-search"  # the library's generate() with beam search (its cache reordered each step)
CACHE_OPERATIONS = "cache-operations"  # a cache can be deep-copied, cropped, batch-selected and reordered
CONTINUOUS_BATCHING = "continuous-batching"  # the library's continuous batching over a paged cache
ASSISTED_DECODING = "assisted-decoding"  # the library's generate() with a draft model or prompt lookup
ATTENTION_IMPLEMENTATIONS = "attention-implementations"  # the model runs under more than one attention kernel
OFFLOADED_CACHE = "offloaded-cache"  # a cache that offloads its layers to the CPU between uses (CUDA only)
QUANTIZED_CACHE = "quantized-cache"  # a lossy quantized cache (quanto, HQQ, FP8 backends)
COMPILED_DECODING = "compiled-decoding"  # the library's generate() with torch.compile'd decoding steps on a static cache
