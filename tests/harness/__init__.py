"""The real-engine test harness: private dockerds, an /etc sandbox, base images.

Nothing here touches the machine's default daemon (``/var/run/docker.sock``)
or its real ``/etc``: the test command (``tests/run``) runs pytest inside a
private mount namespace whose ``/etc`` is an overlay, and every daemon started
here has its own data root, exec root, socket, pidfile and bridge.
"""
