"""``litesam bench``: latency of a model's encoder, prompt decode and segment-everything on each backend
and precision, side by side with its peers (:func:`litesam.bench.run.benchmark`)."""
