"""The idmap helper and its clients: idmapped views of work dirs without a daemon-wide remap."""
