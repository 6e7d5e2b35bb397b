"""Image preparation: validation, axes, normalisation, synthetic nuclei."""
