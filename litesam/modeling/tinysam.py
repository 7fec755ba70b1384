"""TinySAM (xinghaochen/TinySAM): MobileSAM's architecture and checkpoint layout, whose decoder always
returns masks 1..3 (the official ``MaskDecoder.forward`` ignores ``multimask_output``)."""

from __future__ import annotations

from .sam import Sam


class TinySam(Sam):
    """:class:`Sam` that returns the three multimask tokens for every prompt, as TinySAM's decoder."""

    def mask_tokens(self, multimask_output: bool) -> slice:
        """Tokens 1..3 whatever ``multimask_output`` says."""
        return slice(1, None)
