"""Self-supervised pretraining pieces (MoCo v2), usable outside the engine."""
