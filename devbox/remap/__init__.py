"""``devbox remap``: observe the host, assess it (pure), plan the edits (pure), apply or revert them."""
