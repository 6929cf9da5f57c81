"""Simulated Apex Trading and Flourish APIs with seeded data and fault injection.

Tests, the demo and benchmarks run against it; production never does. Start it
with ``sandbox.server.SandboxServer`` or ``python -m sandbox``.
"""
