"""The operator's tools: the command line, the lint of a rule set, the demo.

The top layer: nothing in the library imports it (docs/architecture.md).
"""
