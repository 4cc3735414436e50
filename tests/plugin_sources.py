"""Sources of small, correct third-party plugins, for ``edgekit.testing.install_plugin``.

One copy, shared by the plugin and CLI tests: each test installs them under its own module
name (``module=...``), so a test varies only what it is about (a second distribution with
the same backend name, a broken sibling).
"""

#: A transport backend named 'pigeon'.
PIGEON = """
    from edgekit.plugins import hookimpl, RegistrationReceipt, Transport

    class Pigeon(Transport):
        name = "pigeon"
        def register(self, request, ctx):
            return RegistrationReceipt(request.host["hostUid"], "pending-import")

    @hookimpl
    def edgekit_transports():
        return [Pigeon]
"""

#: A complete publisher backend named 's3dir' (two of them make a conflict).
S3DIR = """
    from edgekit.plugins import hookimpl, Publisher, PullResult, PushResult

    class S3Dir(Publisher):
        name = "s3dir"
        def push_image(self, request, ctx):
            return PushResult(request.target, "sha256:" + "0" * 64, "x", 1)
        def push_artifact(self, request, ctx):
            return PushResult(request.target, "sha256:" + "0" * 64, request.artifact_type, 1)
        def pull(self, request, ctx):
            return PullResult(request.reference, "sha256:" + "0" * 64, "x", 1, request.dest)

    @hookimpl
    def edgekit_publishers():
        return [S3Dir]
"""
