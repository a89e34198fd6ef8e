"""SAM3 model loading: checkpoints in every supported format, image-size set-up, fingerprints."""
