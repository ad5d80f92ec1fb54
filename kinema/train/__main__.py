"""`python -m kinema.train tokenizer --output DIR ...` (the same as `kinema train ...`)."""

from .cli import train_app

train_app()
