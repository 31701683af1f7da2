"""The team CLI: ``ftq login``, ``ftq files upload``, ``ftq jobs …``, ``ftq models list``.

Every command talks to a running ftq through the official ``openai`` SDK (ftq's extension
routes through the SDK's own ``get``), prints tables for people and ``--json`` for scripts.
"""
