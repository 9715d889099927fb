"""Relay core: protocol types, binding store, sender, circuit breakers and the manager.

Nothing in this package imports Slack code.
"""
