"""Semi-supervised pieces (FixMatch), usable outside the engine."""
