"""The running system: coordinator, client runtime, transports, local trainers, models, datasets."""
