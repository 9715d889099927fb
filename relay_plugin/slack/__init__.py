"""Slack layer: the Bolt app, the /relay command, mentions and rendering. Builds on the core."""
