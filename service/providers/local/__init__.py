"""The `local` provider: fine-tunes open-weight models on ftq's own workers.

The training and inference core lives here; it imports torch, transformers and peft, which
come with the optional `train` extra (`pip install .[train]`).
"""
