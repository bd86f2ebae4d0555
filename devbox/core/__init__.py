"""The pure core: id maps, the stack model, findings, hashing.

Nothing in here does I/O or imports anything of devbox outside ``core/``;
every other layer builds on it (a test walks the imports to keep it so).
"""
