"""The test a model library adds to check its KV cache with fuzzkv (pip install fuzzkv: the plugin loads itself).

Run it with ``pytest examples/test_toy_kv_cache.py``; with ``TOYLIB_PLANT_CACHE_BUG=1`` the toy model's cached
path is wrong, and the failure shows the minimal case and a reproduction script.
"""

import pytest
from toy_lib import tiny_toy


@pytest.mark.fuzzkv(max_examples=25)
def test_the_cache_changes_nothing_but_speed(fuzzkv):
    fuzzkv(tiny_toy)
