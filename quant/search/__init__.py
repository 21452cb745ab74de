"""Mixed-precision search over per-layer weight and activation bits: MPTQ-ViT's Greedy MP (``greedy``), P^2-ViT's
coarse-to-fine search (``coarse_to_fine``), both under a budget that is a bit count or, hardware-aware, an energy or a
latency from hwsim's cost model (``budget``). Fitness is measured on held-out training images (``fitness``), never on
the test set. A result is a ``MixedPrecisionMap`` that ``vitsim quantize --mp`` accepts."""
