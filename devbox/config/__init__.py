"""devbox.toml and profiles -> a validated :class:`devbox.core.model.Project`.

Every error names the file, the key path and the line.
"""
