#!/bin/sh
set -eu
chown redis:redis /data
exec setpriv --reuid=redis --regid=redis --init-groups \
    redis-server --bind 0.0.0.0 --protected-mode no --dir /data --appendonly yes "$@"
