"""Signing keys: secrets from ``callbacks:secrets`` (literal or ``sdb://``) and callers' sealed tokens."""
