"""Matching: which rule of a set a connection gets.

The reference matcher (the oracle), the compiled classifier and the parsing of
connection addresses.  Imports only the model (docs/architecture.md).
"""
