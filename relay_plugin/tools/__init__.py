"""Tools the running app never imports: the reference relay agent and the local Slack simulator."""
