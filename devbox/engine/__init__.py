"""The engine boundary: connecting, typed engine errors, engine facts, the probe.

Everything that talks to dockerd's API goes through :mod:`devbox.engine.client`
(the Docker SDK) or :mod:`devbox.engine.fastapi` (the standard library, for the
fast paths); both hand back :class:`devbox.errors.EngineError` with a ``kind``.
"""
