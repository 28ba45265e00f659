"""The benchmark harness (``tcpmgm bench``) and its workloads (benchmarks/README.md).

Installed beside tcpmgm, never imported by it: the command line loads it only for
``tcpmgm bench``.
"""
