"""Training and fine-tuning: targets, losses, augmentation, the loop, 3D training."""
