"""SPICE (Niu et al., IEEE TIP 2022) clustering pieces: heads, prototype pseudo-labels, reliable samples."""
