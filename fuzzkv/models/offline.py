"""The process settings fuzzkv needs before it drives a library, in one explicit call: fuzzkv never talks to the Hub.

The Hub client reads ``HF_HUB_OFFLINE`` once, when it is first imported, so an environment variable set by a module
that happens to import before transformers works only in that import order (and not at all when the user imported
transformers first). :func:`go_offline` sets the variable for child processes and the client's own constant for this
one; the loader and the architecture catalogue call it before they load or build anything. Every load also passes
``local_files_only=True``.
"""

from __future__ import annotations

import os


def go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
