"""The engine boundary: connecting, typed engine errors, engine facts, the probe.

Everything that talks to the engine's API goes through :mod:`devbox.engine.client`:
:func:`~devbox.engine.client.connect` gives an :class:`~devbox.engine.client.Engine`,
whose ``api`` is the standard-library client of :mod:`devbox.engine.fastapi` (lists,
inspects, creates, starts, removes, Podman's own API) and whose ``docker`` is the
Docker SDK, made on first use for what streams (builds, pulls, attach, exec, events).
Both hand back :class:`devbox.errors.EngineError` with a ``kind``.
"""
