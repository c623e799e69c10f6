"""The fixed training harness: data, tokenizer, evaluation, runner, guard and tiers.

Only `harness/train.py` is editable; everything else here is fixed.
"""
