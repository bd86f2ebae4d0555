"""The stack: ``devbox.toml`` -> desired state -> plan (pure) -> executor -> engine.

``up``, ``switch``, ``ps``, ``logs``, ``exec``, ``shell``, ``down``, ``init`` and
``profiles`` live in :mod:`devbox.stack.commands`.
"""
