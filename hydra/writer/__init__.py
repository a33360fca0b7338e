"""The writer process (``hydra writer``) and its asyncio client.

- ``hydra.writer.config.WriterConfig``: the process configuration.
- ``hydra.writer.client.WriterClient``: asyncio client of the command protocol.
- ``hydra.writer.process.WriterProcess``: start and stop a writer subprocess.

The protocol itself is in ``hydra._protocol`` and docs/PROTOCOL.md.
"""
