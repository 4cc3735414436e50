"""edgekit backend: OCI distribution (push, pull, referrers), streaming and byte-exact."""
