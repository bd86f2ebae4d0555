"""The host: who the user is, read-only observation, locked atomic edits, apply/revert.

:mod:`devbox.host.user` is the one answer to "whose files should these be";
:mod:`devbox.host.observe` only reads; :mod:`devbox.host.files` edits files the
way shadow-utils does; :mod:`devbox.host.change` carries out a set of edits
with a dockerd restart, verification and rollback.
"""
