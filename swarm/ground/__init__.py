"""The ground: errors, settings, wire constants, asyncio helpers and the bus (which carries bytes).

It imports nothing of the project but the fixed harness (whose settings the swarm's compose).
"""
