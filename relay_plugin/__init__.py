"""Slack app that relays @mentions to remote AI-agent bots over the HotPlex relay protocol.

Layers: ``relay_plugin.core`` (protocol, store, sender, breakers, manager) never imports Slack code;
``relay_plugin.slack`` (Bolt app, /relay command, mentions, rendering) builds on the core;
``relay_plugin.tools`` (reference agent, Slack simulator, demo) are tools the app never imports;
``relay_plugin.cli`` wires them together.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("relay-plugin")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
