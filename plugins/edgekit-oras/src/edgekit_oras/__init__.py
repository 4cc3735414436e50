"""edgekit backend: OCI distribution (push, pull, referrers) over oras-py, streaming and byte-exact."""
