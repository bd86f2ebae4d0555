"""The ownership watcher: scan, inotify events, leak classification and records, the fix helper.

``devbox watch`` and ``devbox leaks`` live in :mod:`devbox.watch.commands`; the
background watcher that ``up`` starts is :mod:`devbox.watch.process`.
"""
