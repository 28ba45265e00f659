"""The model: what a profile, a protocol, a rule and the key that ranks rules are.

The lowest layer: it imports nothing else of tcpmgm.  Every limit and every
validation of a rule lives here (docs/architecture.md).
"""
