"""Dataset pre-flight validation: formats, checks, tokens, cost, screening and transforms.

Kept import-free on purpose: worker processes import ``checks`` directly and should not pay
for pydantic or the tokenizer unless they need them. Public entry points:
``validator.validate_file``, ``estimate.estimate_for_job``, ``screening``, ``transform``.
"""
