"""Sources of small, correct third-party plugins, for ``edgekit.testing.install_plugin``.

One copy, shared by the plugin and CLI tests: each test installs them under its own module
name (``module=...``), so a test varies only what it is about (a second distribution with
the same backend name, a broken sibling).
"""

#: A transport backend named 'pigeon'.
PIGEON = """
    from edgekit.plugins import hookimpl, Transport

    class Pigeon(Transport):
        name = "pigeon"
        def register(self, endpoint, token, host):
            return {"via": "pigeon"}

    @hookimpl
    def edgekit_transports():
        return [Pigeon]
"""

#: A complete publisher backend named 's3dir' (two of them make a conflict).
S3DIR = """
    from edgekit.plugins import hookimpl, Publisher
    from edgekit.plugins.interfaces import PushResult

    class S3Dir(Publisher):
        name = "s3dir"
        def push_image(self, layout, tag, target, ctx, options):
            return PushResult(target, "sha256:" + "0" * 64, "x", 1)
        def push_artifact(self, path, target, artifact_type, ctx, options, **kw):
            return PushResult(target, "sha256:" + "0" * 64, artifact_type, 1)
        def pull(self, reference, dest, ctx, options, *, tag=None):
            return PushResult(reference, "sha256:" + "0" * 64, "x", 1)

    @hookimpl
    def edgekit_publishers():
        return [S3Dir]
"""
