"""Evaluation with the papers' own protocols, one module per protocol.

- :mod:`.coco`: box-prompted instance segmentation AP on COCO (RepViT-SAM / EfficientViT-SAM protocol).
- :mod:`.bsds`: the BSDS500 boundary benchmark (ODS, OIS, AP, R50) and its ground-truth readers.
- :mod:`.edges`: zero-shot edge maps of a model scored with :mod:`.bsds` over a folder.
- :mod:`.resume`: the per-image result log that makes every evaluation resumable.
- :mod:`.report`: one Markdown + HTML page (tables and plots) from the JSON results of several runs.
- :mod:`.cli`: ``litesam eval coco|edges|miou|report``.

The teacher-student mIoU of the MobileSAM paper lives with distillation (:mod:`litesam.distill.evaluate`).
"""
