"""devbox: editor, runtime and database containers whose bind-mounted files stay yours.

Data flows one way: ``devbox.toml`` + ``profiles/*.toml`` -> :mod:`devbox.model`
-> :mod:`devbox.plan` -> :mod:`devbox.executor` -> Docker.  Host remap lives in
:mod:`devbox.remap` (pure id maths in :mod:`devbox.idmap`); :mod:`devbox.watch`
and :mod:`devbox.doctor` read the same model.  Only :mod:`devbox.console` prints.
"""

__version__ = "0.1.0"
