"""Dev Containers and Compose, both ways: ``devbox import devcontainer``, ``devbox export compose|devcontainer``.

Teams describe their containers in ``.devcontainer/devcontainer.json`` or a compose file; devbox runs
those with its ownership guarantees and writes them back out, so nobody is locked in.

* :mod:`.parse` reads JSONC (json5) and compose YAML into plain data, errors as ``file:line:column``;
* :mod:`.importer` maps a devcontainer.json (and its compose file) onto profile tables, saying
  what it mapped, refused and ignored (pure);
* :mod:`.exporter` maps a resolved profile onto a compose file or a devcontainer.json (pure);
* :mod:`.render` writes TOML, YAML and JSON text (pure);
* :mod:`.command` is the file I/O and the engine questions of the three commands.

The README ("Coming from Dev Containers / Compose") lists every devcontainer.json property and what becomes of it.
"""
