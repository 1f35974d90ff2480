"""Independent NumPy references for the examples: written from the papers' formulas, never using einattn."""
