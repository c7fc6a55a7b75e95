"""The embedded miniature Stable Diffusion, "mini-sd": its architecture, data, training, bench."""
