"""devbox.toml and profiles -> a validated :class:`devbox.core.model.Project`.

Every error names the file, the key path and the line.  :mod:`.source` reads a
file and finds lines; :mod:`.schema` holds one table per table kind and checks
a file against it; :mod:`.merge` layers a service through its profile's
``extends`` chain and devbox.toml; :mod:`.resolve` builds the services and is
the entry point (``find_project``, ``load_project``, ``load_profiles``).
"""
