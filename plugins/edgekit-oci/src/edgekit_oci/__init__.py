"""edgekit backend: daemonless, reproducible OCI provider-image builds (and the sample OS)."""
