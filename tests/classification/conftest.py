"""Classification tests run their tiny models on one intra-op thread (tests/helpers/threads.py),
restored after each test so other test packages are unaffected."""

from ..helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
