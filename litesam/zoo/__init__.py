"""Model families of the registry: each module exports ``MODELS: list[ModelSpec]``."""
