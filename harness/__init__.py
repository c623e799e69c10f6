"""The fixed training harness: data, tokenizer, runner, sandbox, guard, evaluation and tiers; only train.py is editable.

It stands alone: it imports nothing of swarm, agents, blackboard or roles, so its fingerprint covers all it runs.
"""
