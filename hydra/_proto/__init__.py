"""Python modules generated from ``proto/eventstore.proto`` (committed, never edited).

Regenerate with ``python -m hydra._proto.generate`` (``make proto``); a test fails
when they are stale.
"""
