"""Shared fixtures. Heavier set-up lives in tests/fixtures/ and is registered here."""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.sshd",
    "tests.fixtures.emulated_pi",
    "tests.fixtures.netns",
]
